package tokencache

import (
	"maps"
	"testing"
)

// FuzzDecode: whatever another writer left in Redis, decoding never panics, and whatever it accepts survives our own
// encoding unchanged (so a verdict merge or a Dify read sees the same entry).
func FuzzDecode(f *testing.F) {
	f.Add(`{"subject_email":"a@b.c","subject_issuer":"dify:account","account_id":"x","client_id":"difyctl","token_id":"t",` +
		`"expires_at":"2099-01-01T00:00:00.000000+00:00","verified_tenants":{"w":true}}`)
	f.Add(`{"subject_email":"a@b.c","subject_issuer":null,"account_id":null,"client_id":"c","token_id":"t",` +
		`"expires_at":"2099-01-01 00:00:00","verified_tenants":null}`)
	f.Add(`invalid`)
	f.Add(`{"expires_at":"2099-01-01T00:00:00Z"}`)
	f.Fuzz(func(t *testing.T, v string) {
		e, err := decode([]byte(v))
		if err != nil {
			return
		}
		b, err := encode(e)
		if err != nil {
			t.Fatalf("encode of a decoded entry: %v", err)
		}
		again, err := decode(b)
		if err != nil {
			t.Fatalf("our own encoding %s does not decode: %v", b, err)
		}
		if again.SubjectEmail != e.SubjectEmail || again.SubjectIssuer != e.SubjectIssuer || again.AccountID != e.AccountID ||
			again.ClientID != e.ClientID || again.TokenID != e.TokenID || !again.ExpiresAt.Equal(e.ExpiresAt.Truncate(1000)) ||
			!maps.Equal(again.VerifiedTenants, e.VerifiedTenants) && len(e.VerifiedTenants)+len(again.VerifiedTenants) > 0 {
			t.Fatalf("round trip changed %+v into %+v", e, again)
		}
	})
}
