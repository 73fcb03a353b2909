package rules

import (
	"errors"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

func TestWindow(t *testing.T) {
	cases := []struct {
		p              tokens.Page
		offset, limit  int
		wantsRejection bool
	}{
		{tokens.Page{Page: 1, Limit: 20}, 0, 20, false},
		{tokens.Page{Page: 3, Limit: 20}, 40, 20, false},
		{tokens.Page{Page: 1 << 40, Limit: 100}, 1<<31 - 1, 100, false},
		{tokens.Page{Page: 0, Limit: 20}, 0, 0, true},
		{tokens.Page{Page: 1, Limit: 0}, 0, 0, true},
	}
	for _, c := range cases {
		offset, limit, err := Window(c.p)
		if c.wantsRejection {
			if !errors.Is(err, ErrInvalidPage) {
				t.Errorf("Window(%+v) err = %v, want ErrInvalidPage", c.p, err)
			}
			continue
		}
		if err != nil || offset != c.offset || limit != c.limit {
			t.Errorf("Window(%+v) = %d, %d, %v; want %d, %d", c.p, offset, limit, err, c.offset, c.limit)
		}
	}
}

func TestMintNormalisesTheSubject(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 999, time.UTC)
	row, err := Mint(tokens.MintRequest{
		Subject:  tokens.Subject{Type: tokens.SubjectAccount, AccountID: "0B6F3A4E-8C1D-4E2F-9A3B-5C6D7E8F9A01", Email: " A@B.C ", Issuer: tokens.AccountIssuer},
		ClientID: "difyctl", DeviceLabel: "laptop", Prefix: "dfoa_", TokenHash: tokens.Hash("x"), Now: now, ExpiresAt: now.Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	if row.Email != "a@b.c" || row.AccountID != "0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a01" || row.CreatedAt.Nanosecond() != 0 {
		t.Fatalf("row = %+v", row)
	}
}
