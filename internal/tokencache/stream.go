package tokencache

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// streamBlock is how long one read waits for revocations. A read that returns proves nothing was missed until then.
	streamBlock = 400 * time.Millisecond
	// freshFor is how long after a successful read the local layer may serve: longer than a healthy read cycle, short
	// enough that a reader cut off from Redis stops serving before a revocation it cannot see is a second old.
	freshFor = 900 * time.Millisecond
	// streamBatch bounds one read.
	streamBatch = 512
	// maxBackoff bounds the wait between reconnection attempts.
	maxBackoff = time.Second
)

// Run follows the revocation stream and evicts revoked hashes from the local layer, until ctx ends (then it returns nil).
// Call it once per Cache. Without Options.Local it just waits for ctx. On first start it begins at the stream's end (what XREAD's "$" means, but
// read explicitly so nothing between start and the first read is missed). Any read error stops the local layer serving and
// flushes it; after reconnecting it resumes from the last id it saw if that id is still in the stream, else from the end.
func (c *Cache) Run(ctx context.Context) error {
	if c.local == nil {
		<-ctx.Done()
		return nil
	}
	defer c.local.flush()
	lastID := "" // unknown: anchor at the stream's end
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if err := c.follow(ctx, &lastID); err != nil && ctx.Err() == nil {
			c.local.flush()
			select {
			case <-ctx.Done():
			case <-time.After(backoff): // bounded reconnection backoff, not a synchronisation wait
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = 50 * time.Millisecond
	}
	return nil
}

// follow anchors on the stream and reads it until an error or ctx's end.
func (c *Cache) follow(ctx context.Context, lastID *string) error {
	start := time.Now()
	id, err := c.anchor(ctx, *lastID)
	if err != nil {
		return err
	}
	*lastID = id
	c.local.markFresh(start.Add(freshFor))
	return c.read(ctx, lastID)
}

// read evicts what the stream publishes after *lastID, advancing it, until an error or ctx's end.
func (c *Cache) read(ctx context.Context, lastID *string) error {
	for ctx.Err() == nil {
		start := time.Now()
		res, err := c.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{revocationStream, *lastID},
			Count:   streamBatch,
			Block:   streamBlock,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) { // Nil: the block ended without entries
			return err
		}
		prevID := *lastID
		var hashes []string
		for _, s := range res {
			for _, m := range s.Messages {
				if h, ok := m.Values["hash"].(string); ok {
					hashes = append(hashes, h)
				}
				*lastID = m.ID
			}
		}
		if len(hashes) > 0 {
			c.local.evict(hashes...)
		}
		if len(res) > 0 && len(res[0].Messages) == streamBatch {
			// A full batch may mean we fell so far behind that entries after prevID were trimmed before we read them.
			if err := c.checkNotTrimmed(ctx, prevID); err != nil {
				return err
			}
		}
		c.local.markFresh(start.Add(freshFor))
	}
	return nil
}

// anchor returns the id to read after: lastID if the stream still holds it (then nothing after it was trimmed and the
// stream is the one we were reading), else the id of the stream's last entry, or "0-0" for an empty stream.
func (c *Cache) anchor(ctx context.Context, lastID string) (string, error) {
	if lastID != "" {
		msgs, err := c.rdb.XRange(ctx, revocationStream, lastID, lastID).Result()
		if err != nil {
			return "", err
		}
		if len(msgs) == 1 {
			return lastID, nil
		}
	}
	msgs, err := c.rdb.XRevRangeN(ctx, revocationStream, "+", "-", 1).Result()
	if err != nil {
		return "", err
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}

// checkNotTrimmed flushes the local layer unless the stream still holds id: trimming removes the oldest entries first, so
// while id is there nothing after it was lost. ("0-0", the anchor of an empty stream, is never there: flushing is the
// safe answer.)
func (c *Cache) checkNotTrimmed(ctx context.Context, id string) error {
	msgs, err := c.rdb.XRange(ctx, revocationStream, id, id).Result()
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		c.local.flush()
	}
	return nil
}
