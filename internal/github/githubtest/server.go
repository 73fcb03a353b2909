// Package githubtest is a fake GitHub for tests: the OAuth web flow (an authorize endpoint that signs in a chosen user at
// once and redirects back, a token endpoint that checks the client, the code, the redirect URI and the PKCE verifier) and
// the REST API's /user and /user/emails, under /api/v3 as on GitHub Enterprise Server. Faults can be injected per endpoint.
package githubtest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/authgate/authgate/internal/github"
)

// Endpoints, for Fault and Requests.
const (
	Authorize = "authorize"
	Token     = "token"
	User      = "user"
	Emails    = "emails"
)

// Account is a GitHub user of the fake.
type Account struct {
	ID    int64
	Login string
	// Email is the public profile email; empty means hidden (the API answers null).
	Email  string
	Emails []github.Email
}

// Fault changes an endpoint's answers: Status answers it (with Body, or a JSON error message); Hang holds the request until
// the client gives up.
type Fault struct {
	Status int
	Body   string
	Hang   bool
}

// Server is a running fake GitHub.
type Server struct {
	srv          *httptest.Server
	ClientID     string
	ClientSecret string

	mu       sync.Mutex
	signedIn *Account
	deny     bool
	codes    map[string]grant
	tokens   map[string]Account
	issued   []string
	faults   map[string]Fault
	requests map[string]int
	closed   chan struct{}
}

type grant struct {
	account     Account
	redirectURI string
	challenge   string
}

// NewServer starts a fake GitHub, closed when the test ends.
func NewServer(t testing.TB) *Server {
	s := &Server{ClientID: "Ov23liFakeClientId01", ClientSecret: "fake-client-secret-" + random(),
		codes: map[string]grant{}, tokens: map[string]Account{}, faults: map[string]Fault{}, requests: map[string]int{},
		closed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login/oauth/authorize", s.faulty(Authorize, s.authorize))
	mux.HandleFunc("POST /login/oauth/access_token", s.faulty(Token, s.token))
	mux.HandleFunc("GET /api/v3/user", s.faulty(User, s.user))
	mux.HandleFunc("GET /api/v3/user/emails", s.faulty(Emails, s.emails))
	s.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(s.closed)
		s.srv.Close()
	})
	return s
}

// OAuthURL is GITHUB_OAUTH_URL for this fake.
func (s *Server) OAuthURL() string { return s.srv.URL }

// APIURL is GITHUB_API_URL for this fake.
func (s *Server) APIURL() string { return s.srv.URL + "/api/v3" }

// Config is a client configuration for this fake.
func (s *Server) Config() github.Config {
	return github.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, OAuthURL: s.OAuthURL(), APIURL: s.APIURL()}
}

// SignInAs makes the authorize endpoint sign a in (as a browser already signed in at GitHub that authorized the app).
func (s *Server) SignInAs(a Account) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signedIn, s.deny = &a, false
}

// DenyAuthorization makes the authorize endpoint redirect back with error=access_denied, as when the person cancels.
func (s *Server) DenyAuthorization() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deny = true
}

// SetFault makes endpoint answer as f until ClearFaults.
func (s *Server) SetFault(endpoint string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[endpoint] = f
}

// ClearFaults makes every endpoint answer normally again.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[string]Fault{}
}

// Requests is how many requests endpoint received.
func (s *Server) Requests(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[endpoint]
}

// IssuedTokens are the access tokens the token endpoint handed out.
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

func (s *Server) faulty(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests[endpoint]++
		f, faulty := s.faults[endpoint]
		s.mu.Unlock()
		switch {
		case !faulty:
			h(w, r)
		case f.Hang:
			select {
			case <-r.Context().Done():
			case <-s.closed:
			}
		default:
			body := f.Body
			if body == "" {
				body = `{"message":"fault injected"}`
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.Status)
			_, _ = w.Write([]byte(body))
		}
	}
}

// authorize checks the authorization request as GitHub does for a PKCE client, then sends the browser back at once.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	back, err := url.Parse(q.Get("redirect_uri"))
	switch {
	case q.Get("client_id") != s.ClientID:
		http.Error(w, "unknown client_id", http.StatusNotFound)
		return
	case err != nil || back.Scheme == "" || back.Host == "":
		http.Error(w, "redirect_uri is not an absolute URL", http.StatusBadRequest)
		return
	case q.Get("state") == "" || q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43:
		http.Error(w, "state and an S256 code_challenge are required", http.StatusBadRequest)
		return
	case !strings.Contains(" "+q.Get("scope")+" ", " read:user ") || !strings.Contains(" "+q.Get("scope")+" ", " user:email "):
		http.Error(w, "scope must ask for read:user and user:email", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	deny, who := s.deny, s.signedIn
	code := ""
	if !deny && who != nil {
		code = random()
		s.codes[code] = grant{account: *who, redirectURI: q.Get("redirect_uri"), challenge: q.Get("code_challenge")}
	}
	s.mu.Unlock()
	answer := url.Values{"state": {q.Get("state")}}
	switch {
	case deny:
		answer.Set("error", "access_denied")
		answer.Set("error_description", "The user has denied your application access.")
	case who == nil:
		http.Error(w, "nobody is signed in at the fake GitHub (SignInAs)", http.StatusInternalServerError)
		return
	default:
		answer.Set("code", code)
	}
	back.RawQuery = answer.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// token exchanges a code once, for the client that owns it, with the redirect URI and PKCE verifier of its authorization.
// Refusals are GitHub's: 200 with an error code.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	refuse := func(code string) {
		writeJSON(w, map[string]string{"error": code, "error_description": code})
	}
	if r.PostForm.Get("client_id") != s.ClientID ||
		subtle.ConstantTimeCompare([]byte(r.PostForm.Get("client_secret")), []byte(s.ClientSecret)) != 1 {
		refuse("incorrect_client_credentials")
		return
	}
	s.mu.Lock()
	g, ok := s.codes[r.PostForm.Get("code")]
	delete(s.codes, r.PostForm.Get("code")) // a code is used once, whatever the outcome
	s.mu.Unlock()
	switch {
	case !ok:
		refuse("bad_verification_code")
		return
	case r.PostForm.Get("redirect_uri") != g.redirectURI:
		refuse("redirect_uri_mismatch")
		return
	case r.PostForm.Get("code_verifier") == "" || Challenge(r.PostForm.Get("code_verifier")) != g.challenge:
		refuse("invalid_grant") // the verifier does not match the challenge of the authorization request
		return
	}
	token := "gho_" + random()
	s.mu.Lock()
	s.tokens[token] = g.account
	s.issued = append(s.issued, token)
	s.mu.Unlock()
	writeJSON(w, map[string]string{"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})
}

func (s *Server) account(w http.ResponseWriter, r *http.Request) (Account, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	a, known := s.tokens[token]
	s.mu.Unlock()
	if !ok || !known {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"message":"Bad credentials"}`))
		return Account{}, false
	}
	return a, true
}

func (s *Server) user(w http.ResponseWriter, r *http.Request) {
	a, ok := s.account(w, r)
	if !ok {
		return
	}
	var email *string
	if a.Email != "" {
		email = &a.Email
	}
	writeJSON(w, map[string]any{"id": a.ID, "login": a.Login, "name": a.Login, "email": email, "type": "User"})
}

func (s *Server) emails(w http.ResponseWriter, r *http.Request) {
	a, ok := s.account(w, r)
	if !ok {
		return
	}
	out := make([]map[string]any, 0, len(a.Emails))
	for _, e := range a.Emails {
		out = append(out, map[string]any{"email": e.Email, "primary": e.Primary, "verified": e.Verified, "visibility": nil})
	}
	writeJSON(w, out)
}

// Challenge is the S256 code challenge of a PKCE verifier (RFC 7636 §4.2).
func Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func random() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
