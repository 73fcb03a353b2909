package postgres_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
)

// Dify's DB_* variables become a pool on the right database, with Dify's session time zone, DB_EXTRAS' parameters and
// SQLAlchemy's pool bound (pool size plus overflow).
func TestOpenPoolFromDifyVariables(t *testing.T) {
	u, err := url.Parse(testenv.EmptyPostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	vars := map[string]string{
		"DB_HOST": u.Hostname(), "DB_PORT": u.Port(), "DB_USERNAME": u.User.Username(), "DB_PASSWORD": pw,
		"DB_DATABASE":                  strings.TrimPrefix(u.Path, "/"),
		"DB_EXTRAS":                    "sslmode=disable&keepalives_idle=60&application_name=authgate-test",
		"DB_SESSION_TIMEZONE_OVERRIDE": "Asia/Tokyo",
		"SQLALCHEMY_POOL_SIZE":         "3", "SQLALCHEMY_MAX_OVERFLOW": "2",
	}
	if u.Port() == "" {
		vars["DB_PORT"] = "5432"
	}
	lookup := func(name string) (string, bool) { v, ok := vars[name]; return v, ok }
	m, err := config.LoadMaintenance(lookup)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Warnings) != 1 || !strings.Contains(m.Warnings[0], "keepalives_idle") {
		t.Errorf("warnings %q, want one for the dropped libpq parameter", m.Warnings)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := postgres.OpenPool(ctx, m.Database.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if got := pool.Config().MaxConns; got != 5 {
		t.Errorf("pool size = %d, want SQLALCHEMY_POOL_SIZE + SQLALCHEMY_MAX_OVERFLOW = 5", got)
	}
	var db, tz, app string
	if err := pool.QueryRow(ctx, `SELECT current_database(), current_setting('TimeZone'), current_setting('application_name')`).
		Scan(&db, &tz, &app); err != nil {
		t.Fatal(err)
	}
	if db != vars["DB_DATABASE"] || tz != "Asia/Tokyo" || app != "authgate-test" {
		t.Errorf("session: database %s, time zone %s, application %s", db, tz, app)
	}

	// Without SQLALCHEMY_POOL_SIZE the pool keeps authgate's own bound; the time zone is Dify's default, UTC.
	delete(vars, "SQLALCHEMY_POOL_SIZE")
	delete(vars, "DB_SESSION_TIMEZONE_OVERRIDE")
	if m, err = config.LoadMaintenance(lookup); err != nil {
		t.Fatal(err)
	}
	pool2, err := postgres.OpenPool(ctx, m.Database.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool2.Close()
	if got := pool2.Config().MaxConns; got != postgres.DefaultMaxConns {
		t.Errorf("pool size = %d, want the default %d", got, postgres.DefaultMaxConns)
	}
	if err := pool2.QueryRow(ctx, `SELECT current_setting('TimeZone')`).Scan(&tz); err != nil || tz != "UTC" {
		t.Errorf("time zone = %s, %v; want UTC", tz, err)
	}
}
