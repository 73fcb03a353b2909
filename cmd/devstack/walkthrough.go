package main

import (
	"io"
	"text/template"
)

var walkthrough = template.Must(template.New("walkthrough").Parse(`
authgate devstack: in-memory store and in-process Redis; nothing persists. Not for production.

  API entry point (Envoy stand-in)  {{.A.Shim}}/openapi/v1
  deviceflow and the /device page   {{.A.Deviceflow}}
  extauthz gRPC                     {{.A.Extauthz}}   (metrics: {{.A.Admin}}/metrics)
  demo of Dify's API (upstream)     {{.A.Upstream}}   (trusts the x-authgate-* headers extauthz adds)
  demo account {{.Email}} ({{.AccountID}}), workspace {{.TenantID}}
  demo apps: chat {{.AppID}}, workflow {{.WorkflowAppID}}
  another team's workspace {{.OtherTenantID}} and app {{.OtherAppID}}: not yours, refused with 403

With Dify's CLI (difyctl), through the proxy:
   difyctl auth login --host {{.A.Shim}} --insecure
     (approve on the page it opens; the dev sign-in {{.A.Deviceflow}}/signin signs you in as the demo account)
   difyctl get workspace
   difyctl get app
   difyctl describe app {{.AppID}}
   difyctl run app {{.AppID}} "hello from difyctl" --stream
   difyctl run app {{.WorkflowAppID}} --inputs '{"text":"hello"}'
   difyctl version

With curl:
1. Start a device login:
   curl -s -X POST {{.A.Shim}}/openapi/v1/oauth/device/code -d client_id={{.Client}}

2. Open {{.A.Deviceflow}}/device?user_code=<user_code>, sign in (the dev sign-in signs you in as the demo
   account: {{.A.Deviceflow}}/signin) and approve. Or without a browser:
   curl -s -c jar {{.A.Deviceflow}}/signin
   curl -s -b jar -H "X-CSRF-Token: $(awk '$6=="csrf_token"{print $7}' jar)" -H 'Content-Type: application/json' \
     -d '{"user_code":"<user_code>"}' {{.A.Deviceflow}}/openapi/v1/oauth/device/approve

3. Get the token:
   curl -s -X POST {{.A.Shim}}/openapi/v1/oauth/device/token -d client_id={{.Client}} \
     -d grant_type=urn:ietf:params:oauth:grant-type:device_code -d device_code=<device_code>

4. Call the API through the proxy; the demo upstream answers for the identity and workspace extauthz verified:
   curl -s {{.A.Shim}}/openapi/v1/workspaces -H "Authorization: Bearer <access_token>"
   curl -s "{{.A.Shim}}/openapi/v1/apps?workspace_id={{.TenantID}}" -H "Authorization: Bearer <access_token>"
   curl -sN -X POST {{.A.Shim}}/openapi/v1/apps/{{.AppID}}/run -H "Authorization: Bearer <access_token>" \
     -H 'Content-Type: application/json' -H 'Accept: text/event-stream' -d '{"inputs":{},"query":"hello"}'
   curl -s "{{.A.Shim}}/openapi/v1/apps?workspace_id={{.OtherTenantID}}" -H "Authorization: Bearer <access_token>"

`))

func printWalkthrough(w io.Writer, addrs Addrs, clientID string) {
	_ = walkthrough.Execute(w, struct {
		A                                                        Addrs
		Client, Email, AccountID, TenantID, AppID, WorkflowAppID string
		OtherTenantID, OtherAppID                                string
	}{addrs, clientID, demoEmail, demoAccountID, demoTenantID, demoAppID, demoWorkflowAppID, otherTenantID, otherAppID})
}
