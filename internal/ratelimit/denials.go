package ratelimit

import (
	"hash/maphash"
	"sync"
	"time"
)

const (
	// shardCount spreads the limiter's maps over locks, so concurrent Checks of different tokens rarely wait on each other.
	shardCount = 64
	// maxDenials bounds the memory of known denials (per shard: shardCount × this in all); a full shard drops the ones that
	// have ended, then everything, which only sends those buckets back to Redis.
	maxDenialsPerShard = 4096
)

var shardSeed = maphash.MakeSeed()

func shardOf(key string) int { return int(maphash.String(shardSeed, key) % shardCount) }

// denial is a bucket known to hold count entries (at least the limit it was checked against) until a local time: no request
// can be admitted before then.
type denial struct {
	until time.Time
	count int64
}

type denials struct {
	shards [shardCount]denialShard
}

type denialShard struct {
	mu sync.RWMutex
	m  map[string]denial
}

func newDenials() *denials {
	d := &denials{}
	for i := range d.shards {
		d.shards[i].m = map[string]denial{}
	}
	return d
}

// get returns key's denial if it is still in force at now.
func (d *denials) get(key string, shard int, now time.Time) (denial, bool) {
	sh := &d.shards[shard]
	sh.mu.RLock()
	dn, ok := sh.m[key]
	sh.mu.RUnlock()
	if !ok || !now.Before(dn.until) {
		return denial{}, false
	}
	return dn, true
}

// put records a denial. Each denial is a fact (the count only falls by age), so of two for one bucket the later end holds.
func (d *denials) put(key string, shard int, dn denial, now time.Time) {
	if !now.Before(dn.until) {
		return
	}
	sh := &d.shards[shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.m) >= maxDenialsPerShard {
		for k, v := range sh.m {
			if !now.Before(v.until) {
				delete(sh.m, k)
			}
		}
		if len(sh.m) >= maxDenialsPerShard {
			clear(sh.m)
		}
	}
	if old, ok := sh.m[key]; ok && old.until.After(dn.until) {
		return
	}
	sh.m[key] = dn
}
