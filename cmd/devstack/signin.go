package main

import (
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// consoleSessionTTL is how long a dev sign-in lasts.
const consoleSessionTTL = time.Hour

// devSignIn stands in for Dify's console login, which devstack does not have: it signs the demo account in by setting the
// cookies Dify's console sets — access_token (the console passport) and csrf_token (read by the /device page's script) —
// then sends the browser to /device. The target is fixed; redirect_url is not read, so this is no open redirect. It exists
// only in devstack: anyone who can reach it is the demo account.
func devSignIn(secretKey string, now func() time.Time) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		exp := now().Add(consoleSessionTTL)
		passport, err := signHS256(secretKey, jwt.MapClaims{
			"sub": "Console API Passport", "user_id": demoAccountID, "exp": exp.Unix(), "iss": "devstack"})
		if err != nil {
			signInFailed(w)
			return
		}
		csrf, err := signHS256(secretKey, jwt.MapClaims{"sub": demoAccountID, "user_id": demoAccountID, "exp": exp.Unix()})
		if err != nil {
			signInFailed(w)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "access_token", Value: passport, Path: "/", Expires: exp, HttpOnly: true,
			SameSite: http.SameSiteLaxMode})
		http.SetCookie(w, &http.Cookie{Name: "csrf_token", Value: csrf, Path: "/", Expires: exp, SameSite: http.SameSiteLaxMode})
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, "/device", http.StatusFound)
	}
}

func signHS256(secret string, claims jwt.MapClaims) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

func signInFailed(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte(`{"error":"signin_failed","message":"could not sign the console session"}` + "\n"))
}
