package github

import (
	"strings"

	"github.com/authgate/authgate/internal/tokens"
)

// Email is one entry of GET /user/emails.
type Email struct {
	Email    string `json:"email"`
	Primary  bool   `json:"primary"`
	Verified bool   `json:"verified"`
}

// MatchingEmail is the address a GitHub user may be matched to a Dify account by: the profile email when GitHub lists it
// as verified; else the primary address, if verified; else the first other verified one; else none (""). An unverified
// address never qualifies (anyone can add any address to a GitHub account), and neither does a noreply address, GitHub's
// stand-in for a hidden one, which no Dify account can have proven it owns. A hidden profile email (null) is therefore
// resolved from the list, as Dify resolves it.
func MatchingEmail(profile string, emails []Email) string {
	usable := func(e Email) bool { return e.Verified && e.Email != "" && !IsNoreply(e.Email) }
	if p := tokens.NormalizeEmail(profile); p != "" {
		for _, e := range emails {
			if usable(e) && tokens.NormalizeEmail(e.Email) == p {
				return e.Email
			}
		}
	}
	for _, e := range emails {
		if e.Primary && usable(e) {
			return e.Email
		}
	}
	for _, e := range emails {
		if usable(e) {
			return e.Email
		}
	}
	return ""
}

// IsNoreply reports whether addr is a GitHub noreply address: ID+LOGIN@users.noreply.github.com, or on GitHub Enterprise
// Server @users.noreply.HOST.
func IsNoreply(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	domain := tokens.NormalizeEmail(addr[at+1:])
	return strings.HasPrefix(domain, "users.noreply.")
}
