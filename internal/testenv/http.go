package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Do sends one HTTP request with a 5 s budget and returns its status and body (at most 64 KiB). Status 0 means no answer
// at all (refused, reset, timed out), which the fault tests count rather than fail on. A url.Values body is sent as a form,
// []byte as is, nil as none; bearer, when set, goes in Authorization.
func Do(ctx context.Context, method, target, bearer string, body any, headers map[string]string) (int, []byte) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case url.Values:
		r = strings.NewReader(b.Encode())
	case []byte:
		r = bytes.NewReader(b)
	default:
		panic(fmt.Sprintf("testenv.Do: a body of type %T", body))
	}
	req, err := http.NewRequestWithContext(ctx, method, target, r)
	if err != nil {
		return 0, nil
	}
	if _, ok := body.(url.Values); ok {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, b
}

// ConsoleSession returns the headers of a request from Dify's console signed in as accountID: the console passport and
// CSRF cookies, signed with secretKey (Dify's SECRET_KEY) as Dify signs them for an hour, and the matching X-CSRF-Token.
func ConsoleSession(secretKey, accountID string) map[string]string {
	exp := time.Now().Add(time.Hour).Unix()
	sign := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secretKey))
		if err != nil {
			panic(err) // HS256 with a []byte key does not fail
		}
		return s
	}
	passport := sign(jwt.MapClaims{"sub": "Console API Passport", "user_id": accountID, "exp": exp})
	csrf := sign(jwt.MapClaims{"sub": accountID, "user_id": accountID, "exp": exp})
	return map[string]string{"X-CSRF-Token": csrf, "Cookie": "access_token=" + passport + "; csrf_token=" + csrf}
}
