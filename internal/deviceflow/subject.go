package deviceflow

import (
	"context"
	"errors"
	"net/http"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

// accountJSON is {id, email, name}; nil (JSON null) for external subjects.
type accountJSON struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
}

type workspaceJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role string `json:"role"`
}

// profile is what the poll response and /me say about a subject, read from Dify's directory.
type profile struct {
	Account            *accountJSON    `json:"account"`
	Workspaces         []workspaceJSON `json:"workspaces"`
	DefaultWorkspaceID *string         `json:"default_workspace_id"`
}

// errAccountGone: the token's or approval's account no longer exists or is no longer active.
var errAccountGone = errors.New("deviceflow: account missing or not active")

// profileOf reads the subject's account and workspaces. An external subject has no account and no workspaces. The default
// workspace is the join marked current, else the first membership.
func (s *Server) profileOf(ctx context.Context, sub tokens.Subject) (profile, error) {
	p := profile{Workspaces: []workspaceJSON{}}
	if sub.Type != tokens.SubjectAccount {
		return p, nil
	}
	acct, err := s.deps.Directory.Account(ctx, sub.AccountID)
	if errors.Is(err, directory.ErrNotFound) {
		return profile{}, errAccountGone
	}
	if err != nil {
		return profile{}, err
	}
	if acct.Status != directory.AccountStatusActive {
		return profile{}, errAccountGone
	}
	p.Account = &accountJSON{ID: acct.ID, Email: acct.Email, Name: acct.Name}
	wss, err := s.deps.Directory.Workspaces(ctx, acct.ID)
	if err != nil {
		return profile{}, err
	}
	for _, ws := range wss {
		p.Workspaces = append(p.Workspaces, workspaceJSON{ID: ws.ID, Name: ws.Name, Role: ws.Role})
		if ws.Current && p.DefaultWorkspaceID == nil {
			p.DefaultWorkspaceID = &ws.ID
		}
	}
	if p.DefaultWorkspaceID == nil && len(wss) > 0 {
		p.DefaultWorkspaceID = &wss[0].ID
	}
	return p, nil
}

func accountInactive() *apiError {
	return errorf(http.StatusForbidden, codeAccountInactive, "the account is not active")
}
