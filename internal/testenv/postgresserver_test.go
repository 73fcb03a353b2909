package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The private cluster keeps committed data across a restart and a crash, and refuses connections while it is down.
func TestPostgresServerRestartAndCrash(t *testing.T) {
	s := StartPostgresServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exec := func(sql string) error {
		c, err := pgx.Connect(ctx, s.URL())
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if err := exec("INSERT INTO kept VALUES (2)"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	s.Crash()
	if err := exec("SELECT 1"); err == nil {
		t.Fatal("a crashed server accepted a query")
	}
	s.Start()
	c, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM kept").Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows after restart and crash recovery = %d, %v; want 2", n, err)
	}
}
