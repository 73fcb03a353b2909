package deploy_test

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/authgate/authgate/internal/config"
)

// difyAPIObjects is what Dify's api ConfigMap and Secret hold in a production deployment with Sentinel: connection settings
// authgate reads, Dify settings it does not, and names both use with Dify's spelling (LOG_LEVEL=INFO, which authgate would
// refuse).
var difyAPIObjects = map[string]map[string]string{
	"ConfigMap/dify-api": {
		"DB_HOST": "dify-postgresql", "DB_PORT": "5432", "DB_USERNAME": "dify", "DB_DATABASE": "dify",
		"DB_EXTRAS": "sslmode=disable", "SQLALCHEMY_POOL_SIZE": "30",
		"REDIS_USE_SENTINEL": "true", "REDIS_SENTINELS": "dify-redis-node-0.dify-redis-headless:26379,dify-redis-node-1.dify-redis-headless:26379",
		"REDIS_SENTINEL_SERVICE_NAME": "mymaster", "REDIS_DB": "0",
		"LOG_LEVEL": "INFO", "STORAGE_TYPE": "s3", "VECTOR_STORE": "weaviate", "CONSOLE_WEB_URL": "https://dify.internal",
	},
	"Secret/dify-api": {"DB_PASSWORD": "db-pw", "REDIS_PASSWORD": "redis-pw", "SECRET_KEY": "dify-secret-key-at-least-32-bytes-long"},
}

// external is Dify's objects plus the Secret "authgate" with the given keys.
func external(authgateKeys map[string]string) map[string]map[string]string {
	out := map[string]map[string]string{"Secret/authgate": authgateKeys}
	for k, v := range difyAPIObjects {
		out[k] = v
	}
	return out
}

// The services take their connection settings from Dify's api ConfigMap and Secret when the Secret "authgate" has no URLs,
// and from the URLs when it has them; authgate's own ConfigMaps win on names both set.
func TestServicesTakeDifyConnectionSettings(t *testing.T) {
	for _, dir := range renderedDirs {
		m := render(t, dir)
		for _, name := range []string{"extauthz", "deviceflow"} {
			where := dir + ": " + name
			c, _ := authgateContainer(t, m.deployments[name].Spec.Template.Spec)
			checkDifyRefsComeFirst(t, where, c)

			env, _ := envWith(t, m, c, external(map[string]string{"secret-key": "authgate-secret-key-at-least-32-bytes"}))
			lookup := func(n string) (string, bool) { v, ok := env[n]; return v, ok }
			x, _, err := config.LoadExtauthz(lookup)
			if err != nil {
				t.Errorf("%s: with Dify's settings only: %v", where, err)
				continue
			}
			if x.Database.URL != "" || x.Database.Host != "dify-postgresql" || x.Database.Password != "db-pw" ||
				x.Redis.URL != "" || x.Redis.Mode != config.RedisSentinel || len(x.Redis.Addrs) != 2 ||
				x.Redis.MasterName != "mymaster" || x.Redis.Password != "redis-pw" {
				t.Errorf("%s: with Dify's settings only: database %v, redis %v", where, x.Database, x.Redis)
			}
			if x.LogLevel != "info" {
				t.Errorf("%s: LOG_LEVEL = %q, want authgate's ConfigMap to win over Dify's", where, x.LogLevel)
			}
			if name == "deviceflow" {
				if _, _, err := config.LoadDeviceflow(lookup); err != nil {
					t.Errorf("%s: with Dify's settings only: %v", where, err)
				}
			}

			env, _ = envWith(t, m, c, external(map[string]string{"secret-key": "authgate-secret-key-at-least-32-bytes",
				"database-url": "postgres://authgate@pg/dify", "redis-url": "redis://redis:6379/0"}))
			x, _, err = config.LoadExtauthz(func(n string) (string, bool) { v, ok := env[n]; return v, ok })
			if err != nil || x.Database.URL != "postgres://authgate@pg/dify" || x.Redis.URL != "redis://redis:6379/0" {
				t.Errorf("%s: with the URLs in the Secret authgate: database %v, redis %v, %v", where, x.Database, x.Redis, err)
			}
		}

		// The migration Job reads the database the same way, and nothing of Redis.
		c, _ := authgateContainer(t, m.jobs["authgate-migrate"].Spec.Template.Spec)
		env, _ := envWith(t, m, c, external(nil))
		mc, err := config.LoadMaintenance(func(n string) (string, bool) { v, ok := env[n]; return v, ok })
		if err != nil || mc.Database.Host != "dify-postgresql" || mc.Database.Password != "db-pw" {
			t.Errorf("%s: migration Job with Dify's settings only: %v, %v", dir, mc.Database, err)
		}
		for k := range env {
			if k == "REDIS_PASSWORD" || k == "SECRET_KEY" {
				t.Errorf("%s: the migration Job gets %s", dir, k)
			}
		}
	}
}

// checkDifyRefsComeFirst: Dify's objects are optional (authgate runs without them) and come before authgate's ConfigMaps
// (later envFrom entries win); the URLs are optional Secret keys (env wins over every envFrom).
func checkDifyRefsComeFirst(t *testing.T, where string, c corev1.Container) {
	t.Helper()
	var order []string
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == "dify-api":
			if ef.ConfigMapRef.Optional == nil || !*ef.ConfigMapRef.Optional {
				t.Errorf("%s: Dify's ConfigMap must be an optional reference", where)
			}
			order = append(order, "dify")
		case ef.SecretRef != nil && ef.SecretRef.Name == "dify-api":
			if ef.SecretRef.Optional == nil || !*ef.SecretRef.Optional {
				t.Errorf("%s: Dify's Secret must be an optional reference", where)
			}
			order = append(order, "dify")
		default:
			order = append(order, "authgate")
		}
	}
	if !slices.Equal(order, []string{"dify", "dify", "authgate", "authgate"}) {
		t.Errorf("%s: envFrom order %v, want Dify's ConfigMap and Secret before authgate's ConfigMaps", where, order)
	}
	for _, e := range c.Env {
		if e.Name != "DATABASE_URL" && e.Name != "REDIS_URL" {
			continue
		}
		if ref := e.ValueFrom.SecretKeyRef; ref == nil || ref.Optional == nil || !*ref.Optional {
			t.Errorf("%s: %s must be an optional Secret key, so Dify's variables apply without it", where, e.Name)
		}
	}
}
