#!/bin/bash
# The Envoy front proxy's preStop hook (deploy/k8s/overlays/envoy). Envoy exits as soon as it gets SIGTERM and cuts every
# request in flight (envoyproxy/envoy#7841), and app runs stream for minutes, so the kubelet's SIGTERM must wait for the
# proxy to drain:
#   1. POST /healthcheck/fail: the admin /ready answers 503, the readiness probe fails, the Service stops sending new clients.
#   2. POST /drain_listeners?graceful: for DRAIN_SECONDS (Envoy's --drain-time-s) the listeners still accept what load
#      balancers send before they notice, while Envoy asks clients to go elsewhere (HTTP/2 GOAWAY, Connection: close on
#      HTTP/1.1 responses); then the listeners stop accepting. Requests in flight carry on.
#   3. Wait until no request is in flight on the public listener, MAX_SECONDS after the start at the most.
# The kubelet sends SIGTERM once this exits; terminationGracePeriodSeconds must exceed MAX_SECONDS.
#
# Usage: drain.sh ADMIN_PORT DRAIN_SECONDS MAX_SECONDS
# The image has bash but no curl: the admin interface is spoken to over bash's /dev/tcp.
set -u

port=${1:?admin port} drain=${2:?drain seconds} max=${3:?max seconds}
deadline=$((SECONDS + max))

# admin METHOD PATH: one request to the admin interface on loopback. Prints the body (chunk-size lines of a chunked body
# included: callers look for whole lines they know) and fails unless the answer is 200.
admin() {
	local status line body=
	exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
	printf '%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$1" "$2" >&3
	if ! IFS= read -r -t 5 status <&3; then
		exec 3<&-
		return 1
	fi
	while IFS= read -r -t 5 line <&3 && [[ -n ${line%$'\r'} ]]; do :; done
	while IFS= read -r -t 5 line <&3 || [[ -n $line ]]; do
		body+=${line%$'\r'}$'\n'
	done
	exec 3<&-
	printf '%s' "$body"
	[[ $status == "HTTP/1.1 200"* ]]
}

admin POST /healthcheck/fail >/dev/null || echo "drain: POST /healthcheck/fail failed" >&2
admin POST '/drain_listeners?graceful' >/dev/null || echo "drain: POST /drain_listeners?graceful failed" >&2
sleep "$drain"

active=unknown
while ((SECONDS < deadline)); do
	if ! stats=$(admin GET '/stats?filter=downstream_rq_active'); then
		echo "drain: the admin interface does not answer; nothing left to wait for" >&2
		exit 0
	fi
	if [[ $stats =~ (^|$'\n')http\.public\.downstream_rq_active:\ ([0-9]+) ]]; then
		active=${BASH_REMATCH[2]}
		if ((active == 0)); then
			exit 0
		fi
	else
		# Unknown is not zero: keep waiting rather than cut streams.
		active=unknown
	fi
	sleep 1
done
echo "drain: ${active} requests still in flight after ${max}s; they are cut off" >&2
exit 1
