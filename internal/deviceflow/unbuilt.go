package deviceflow

import "net/http"

// Handlers still being written; each moves to its own file.
func notYet(w http.ResponseWriter, r *http.Request) error {
	return errorf(http.StatusNotImplemented, "not_implemented", "not implemented yet")
}

func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request) error      { return notYet(w, r) }
func (s *Server) handleApprove(w http.ResponseWriter, r *http.Request) error     { return notYet(w, r) }
func (s *Server) handleDeny(w http.ResponseWriter, r *http.Request) error        { return notYet(w, r) }
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) error          { return notYet(w, r) }
func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request) error {
	return notYet(w, r)
}
func (s *Server) handleRevokeSelf(w http.ResponseWriter, r *http.Request) error { return notYet(w, r) }
func (s *Server) handleRevokeSession(w http.ResponseWriter, r *http.Request) error {
	return notYet(w, r)
}
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) error   { return notYet(w, r) }
func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) error { return notYet(w, r) }
