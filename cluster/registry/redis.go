package registry

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the registry shared by several nodes through one redis-server.
// Keys (Prefix "coop:"): coop:nodes, a sorted set of node ids scored by
// expiry (Unix ms); coop:node:{id}, the node's entry as JSON with a TTL.
// A heartbeat rewrites both, so a restarted, empty Redis is whole again
// after one heartbeat from every node.
type Redis struct {
	c       redis.UniversalClient
	opts    Options
	dropped atomic.Uint64
}

var _ Registry = (*Redis)(nil)

// NewRedis uses c (not closed by Close: the caller owns it).
func NewRedis(c redis.UniversalClient, opts Options) *Redis {
	return &Redis{c: c, opts: opts.withDefaults()}
}

func (r *Redis) nodesKey() string         { return r.opts.Prefix + "nodes" }
func (r *Redis) nodeKey(id string) string { return r.opts.Prefix + "node:" + id }

// Heartbeat implements Registry: one transaction that drops expired ids,
// writes the entry with its TTL and evicts the oldest ids beyond
// MaxNodes.
func (r *Redis) Heartbeat(ctx context.Context, n Node) error {
	d, err := normalize(&n, r.opts.MaxStreamsPerNode)
	if err != nil {
		return err
	}
	r.dropped.Add(uint64(d))
	now := time.Now()
	n.Seen = now
	b, err := encodeNode(n)
	if err != nil {
		return fmt.Errorf("registry: encode: %w", err)
	}
	pipe := r.c.TxPipeline()
	pipe.ZRemRangeByScore(ctx, r.nodesKey(), "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	pipe.Set(ctx, r.nodeKey(n.ID), b, r.opts.TTL)
	pipe.ZAdd(ctx, r.nodesKey(), redis.Z{Score: float64(now.Add(r.opts.TTL).UnixMilli()), Member: n.ID})
	evicted := pipe.ZRemRangeByRank(ctx, r.nodesKey(), 0, -int64(r.opts.MaxNodes)-1)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("registry: heartbeat %s: %w", n.ID, err)
	}
	r.dropped.Add(uint64(evicted.Val()))
	return nil
}

// Leave implements Registry.
func (r *Redis) Leave(ctx context.Context, id string) error {
	pipe := r.c.TxPipeline()
	pipe.ZRem(ctx, r.nodesKey(), id)
	pipe.Del(ctx, r.nodeKey(id))
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("registry: leave %s: %w", id, err)
	}
	return nil
}

// View implements Registry: the ids not expired (at most MaxNodes), then
// their entries; an entry gone meanwhile or unreadable is skipped.
func (r *Redis) View(ctx context.Context) (View, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	ids, err := r.c.ZRangeByScore(ctx, r.nodesKey(), &redis.ZRangeBy{Min: "(" + now, Max: "+inf", Count: int64(r.opts.MaxNodes)}).Result()
	if err != nil {
		return View{}, fmt.Errorf("registry: list nodes: %w", err)
	}
	nodes := make([]Node, 0, len(ids))
	if len(ids) > 0 {
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = r.nodeKey(id)
		}
		vals, err := r.c.MGet(ctx, keys...).Result()
		if err != nil {
			return View{}, fmt.Errorf("registry: read nodes: %w", err)
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // expired between the two reads
			}
			n, err := decodeNode([]byte(s), r.opts.MaxStreamsPerNode)
			if err != nil {
				r.dropped.Add(1)
				continue
			}
			nodes = append(nodes, n)
		}
	}
	v := aggregate("redis", nodes, r.opts.MaxStreams)
	v.Dropped += r.dropped.Load()
	return v, nil
}

// Close implements Registry (the client stays open: its owner closes it).
func (r *Redis) Close() error { return nil }
