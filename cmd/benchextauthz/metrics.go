package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// cacheCounts reads extauthz's own count of token cache reads by result (hit, miss, invalid, error) from /metrics, so the
// report can show that the measured Checks were cache hits rather than assume it.
func cacheCounts(ctx context.Context, adminAddr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	const series = "authgate_extauthz_token_cache_total{"
	counts := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, series) {
			continue
		}
		labels, value, ok := strings.Cut(line[len(series):], "} ")
		if !ok {
			continue
		}
		_, after, ok := strings.Cut(labels, `result="`)
		if !ok {
			continue
		}
		result, _, _ := strings.Cut(after, `"`)
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err == nil {
			counts[result] += v
		}
	}
	return counts, sc.Err()
}

// cacheDelta is after minus before, for each result seen.
func cacheDelta(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}
