package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Defaults of RedisOptions.
const (
	// DefaultRefresh is how often the reader takes a snapshot of the
	// other nodes' members.
	DefaultRefresh = time.Second
	// DefaultQueue bounds the member changes waiting for the writer.
	DefaultQueue = 1024
	// DefaultMaxMembers caps the members of one stream this node
	// publishes, and the other nodes' members it reads.
	DefaultMaxMembers = 10000
	// maxMemberValue bounds one member's encoded value read back.
	maxMemberValue = 512
)

// RedisOptions configure a Redis tracker; zero fields take the defaults.
type RedisOptions struct {
	// Client is the shared connection pool (the caller closes it).
	Client redis.UniversalClient
	// Stream and Node name the swarm and this node (keys are
	// Prefix+"{"+Stream+"}:members:"+Node; the braces keep a stream's
	// keys in one Redis Cluster slot).
	Stream, Node string
	// TTL is how long a node's members outlive its last write
	// (registry.DefaultTTL).
	TTL time.Duration
	// Sync is the full re-sync period (registry.DefaultHeartbeat): the
	// node's whole member set is rewritten, which rebuilds it after a
	// Redis restart and repairs dropped changes.
	Sync time.Duration
	// Refresh is the reader's period (DefaultRefresh).
	Refresh time.Duration
	// Queue bounds the pending changes (DefaultQueue); beyond it changes
	// are dropped, counted, and repaired by the next re-sync.
	Queue int
	// MaxMembers caps published and read members (DefaultMaxMembers).
	MaxMembers int
	// Prefix namespaces keys (registry.DefaultPrefix).
	Prefix string
	// Log reports Redis failures (once per state change).
	Log *slog.Logger
}

// Redis is a swarm's tracker shared by several nodes through Redis. The
// engine's calls (Join, Leave, Candidates, Sync) never wait on Redis:
// they touch a local map, queue the change for a writer goroutine and
// read a snapshot of the other nodes' members that a reader goroutine
// refreshes. A node that dies stops refreshing its TTL, and its members
// vanish from the others' snapshots within the TTL.
type Redis struct {
	opts RedisOptions

	local map[wire.PeerID]partners.Known // engine goroutine only

	queue  chan change
	snap   atomic.Pointer[map[wire.PeerID]member] // latest full local set from Sync
	wake   chan struct{}
	remote atomic.Pointer[remoteSet]

	dropped, errs, ops atomic.Uint64

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

var _ engine.Tracker = (*Redis)(nil)

// member is a peer as published: what partners.Candidates reads.
type member struct {
	addr     string
	up       float64
	rtt      time.Duration
	partners int
}

func (m member) Addr() string       { return m.addr }
func (m member) Upload() float64    { return m.up }
func (m member) RTT() time.Duration { return m.rtt }
func (m member) Partners() int      { return m.partners }

type change struct {
	id    wire.PeerID
	m     member
	leave bool
}

// remoteSet is the other nodes' members at one refresh.
type remoteSet struct {
	ids []wire.PeerID // sorted
	m   map[wire.PeerID]member
}

// RedisStats are a Redis tracker's counters.
type RedisStats struct {
	// Remote is the other nodes' members in the last snapshot.
	Remote int
	// Dropped counts changes dropped on a full queue.
	Dropped uint64
	// Errors counts failed Redis round trips.
	Errors uint64
	// Ops counts Redis commands sent.
	Ops uint64
}

// NewRedis starts a tracker's writer and reader; Close stops them.
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Client == nil || o.Stream == "" || o.Node == "" {
		return nil, errors.New("tracker: redis needs a client, a stream and a node id")
	}
	if o.TTL <= 0 {
		o.TTL = registry.DefaultTTL
	}
	if o.Sync <= 0 {
		o.Sync = registry.DefaultHeartbeat
	}
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.MaxMembers <= 0 {
		o.MaxMembers = DefaultMaxMembers
	}
	if o.Prefix == "" {
		o.Prefix = registry.DefaultPrefix
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &Redis{opts: o, local: make(map[wire.PeerID]partners.Known), queue: make(chan change, o.Queue),
		wake: make(chan struct{}, 1)}
	r.remote.Store(&remoteSet{m: map[wire.PeerID]member{}})
	ctx, cancel := context.WithCancel(context.Background())
	r.ctx, r.cancel = ctx, cancel
	r.wg.Add(2)
	go r.writer(ctx)
	go r.reader(ctx)
	return r, nil
}

func (r *Redis) membersKey(node string) string {
	return r.opts.Prefix + "{" + r.opts.Stream + "}:members:" + node
}
func (r *Redis) nodesKey() string { return r.opts.Prefix + "{" + r.opts.Stream + "}:nodes" }

func snapshot(v partners.Known) member {
	return member{addr: v.Addr(), up: v.Upload(), rtt: v.RTT(), partners: v.Partners()}
}

// Join implements engine.Tracker.
func (r *Redis) Join(id wire.PeerID, view partners.Known) {
	r.local[id] = view
	r.enqueue(change{id: id, m: snapshot(view)})
}

// Leave implements engine.Tracker.
func (r *Redis) Leave(id wire.PeerID) {
	delete(r.local, id)
	r.enqueue(change{id: id, leave: true})
}

func (r *Redis) enqueue(c change) {
	select {
	case r.queue <- c:
	default:
		r.dropped.Add(1) // the next Sync repairs it
	}
}

// Sync hands the writer the full local member set with fresh figures
// (upload, RTT, partners); call it from the engine's goroutine, every
// RedisOptions.Sync (Drive does).
func (r *Redis) Sync() {
	ids := make([]wire.PeerID, 0, len(r.local))
	for id := range r.local {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) > r.opts.MaxMembers {
		r.dropped.Add(uint64(len(ids) - r.opts.MaxMembers))
		ids = ids[:r.opts.MaxMembers]
	}
	m := make(map[wire.PeerID]member, len(ids))
	for _, id := range ids {
		m[id] = snapshot(r.local[id])
	}
	r.snap.Store(&m)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Drive calls Sync every RedisOptions.Sync through do, which must run
// its argument on the engine's goroutine (tcpnode.Node.Do), until Close.
func (r *Redis) Drive(do func(func()) error) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(r.opts.Sync)
		defer t.Stop()
		for {
			if err := do(r.Sync); err != nil {
				return // the engine is gone
			}
			select {
			case <-t.C:
			case <-r.ctx.Done():
				return
			}
		}
	}()
}

// Len is the local members.
func (r *Redis) Len() int { return len(r.local) }

// Candidates implements engine.Tracker: this node's members and the last
// snapshot of the other nodes', ranked as partners.Candidates ranks.
func (r *Redis) Candidates(q partners.Query) []wire.Candidate {
	rs := r.remote.Load()
	ids := make([]wire.PeerID, 0, len(r.local)+len(rs.ids))
	for id := range r.local {
		ids = append(ids, id)
	}
	for _, id := range rs.ids {
		if _, ok := r.local[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return partners.Candidates(ids, func(id wire.PeerID) partners.Known {
		if v, ok := r.local[id]; ok {
			return v
		}
		return rs.m[id]
	}, q)
}

// Stats reads the counters (any goroutine).
func (r *Redis) Stats() RedisStats {
	return RedisStats{Remote: len(r.remote.Load().ids), Dropped: r.dropped.Load(), Errors: r.errs.Load(), Ops: r.ops.Load()}
}

// Close stops the goroutines and withdraws this node's members.
func (r *Redis) Close() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		pipe := r.opts.Client.TxPipeline()
		pipe.Del(ctx, r.membersKey(r.opts.Node))
		pipe.ZRem(ctx, r.nodesKey(), r.opts.Node)
		_, _ = pipe.Exec(ctx)
	})
}

// failing logs the first failure after a success and the recovery.
type failing struct {
	log  *slog.Logger
	what string
	on   bool
}

func (f *failing) report(err error, stream string) {
	switch {
	case err != nil && !f.on:
		f.log.Warn("tracker: redis "+f.what+" failing (logged again when it recovers)", "stream", stream, "err", err)
		f.on = true
	case err == nil && f.on:
		f.log.Info("tracker: redis "+f.what+" recovered", "stream", stream)
		f.on = false
	}
}

// writer applies queued changes in batches and rewrites the whole set
// every Sync.
func (r *Redis) writer(ctx context.Context) {
	defer r.wg.Done()
	mirror := map[wire.PeerID]member{}
	var seen *map[wire.PeerID]member
	t := time.NewTicker(r.opts.Sync)
	defer t.Stop()
	f := failing{log: r.opts.Log, what: "writes"}
	full := true
	var lastFull time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-r.queue:
			batch := []change{c}
			for len(batch) < 256 {
				select {
				case c := <-r.queue:
					batch = append(batch, c)
					continue
				default:
				}
				break
			}
			for _, c := range batch {
				if c.leave {
					delete(mirror, c.id)
				} else if len(mirror) < r.opts.MaxMembers || mirror[c.id] != (member{}) {
					mirror[c.id] = c.m
				}
			}
			if !full {
				f.report(r.writeChanges(ctx, batch, mirror), r.opts.Stream)
				continue
			}
		case <-r.wake:
		case <-t.C:
			if time.Since(lastFull) < r.opts.Sync/2 {
				continue // a Sync just rewrote everything
			}
			full = true
		}
		lastFull = time.Now()
		if s := r.snap.Load(); s != nil && s != seen {
			seen = s
			mirror = make(map[wire.PeerID]member, len(*s))
			for id, m := range *s {
				mirror[id] = m
			}
		}
		err := r.writeAll(ctx, mirror)
		f.report(err, r.opts.Stream)
		full = err != nil // after a failure, rewrite everything next time
	}
}

func (r *Redis) expiry() (score float64, now string) {
	n := time.Now()
	return float64(n.Add(r.opts.TTL).UnixMilli()), strconv.FormatInt(n.UnixMilli(), 10)
}

// writeChanges sends a batch of joins and leaves.
func (r *Redis) writeChanges(ctx context.Context, batch []change, mirror map[wire.PeerID]member) error {
	key := r.membersKey(r.opts.Node)
	pipe := r.opts.Client.Pipeline()
	for _, c := range batch {
		field := strconv.FormatUint(uint64(c.id), 10)
		if c.leave {
			pipe.HDel(ctx, key, field)
		} else if _, ok := mirror[c.id]; ok {
			pipe.HSet(ctx, key, field, encodeMember(c.m))
		}
	}
	score, _ := r.expiry()
	pipe.PExpire(ctx, key, r.opts.TTL)
	pipe.ZAdd(ctx, r.nodesKey(), redis.Z{Score: score, Member: r.opts.Node})
	return r.exec(ctx, pipe)
}

// writeAll replaces this node's member hash with mirror.
func (r *Redis) writeAll(ctx context.Context, mirror map[wire.PeerID]member) error {
	key := r.membersKey(r.opts.Node)
	score, now := r.expiry()
	pipe := r.opts.Client.TxPipeline()
	pipe.Del(ctx, key)
	pipe.ZRemRangeByScore(ctx, r.nodesKey(), "-inf", now)
	if len(mirror) == 0 {
		pipe.ZRem(ctx, r.nodesKey(), r.opts.Node)
		return r.exec(ctx, pipe)
	}
	vals := make([]any, 0, 2*len(mirror))
	for id, m := range mirror {
		vals = append(vals, strconv.FormatUint(uint64(id), 10), encodeMember(m))
	}
	pipe.HSet(ctx, key, vals...)
	pipe.PExpire(ctx, key, r.opts.TTL)
	pipe.PExpire(ctx, r.nodesKey(), 2*r.opts.TTL)
	pipe.ZAdd(ctx, r.nodesKey(), redis.Z{Score: score, Member: r.opts.Node})
	return r.exec(ctx, pipe)
}

func (r *Redis) exec(ctx context.Context, pipe redis.Pipeliner) error {
	r.ops.Add(uint64(pipe.Len()))
	wctx, cancel := context.WithTimeout(ctx, r.opts.Sync)
	defer cancel()
	if _, err := pipe.Exec(wctx); err != nil {
		r.errs.Add(1)
		return fmt.Errorf("tracker %s: %w", r.opts.Stream, err)
	}
	return nil
}

// reader refreshes the snapshot of the other nodes' members.
func (r *Redis) reader(ctx context.Context) {
	defer r.wg.Done()
	t := time.NewTicker(r.opts.Refresh)
	defer t.Stop()
	f := failing{log: r.opts.Log, what: "reads"}
	for {
		rs, err := r.read(ctx)
		if err == nil {
			r.remote.Store(rs)
		}
		f.report(err, r.opts.Stream)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maxNodes bounds the nodes one read walks.
const maxNodes = registry.DefaultMaxNodes

func (r *Redis) read(ctx context.Context) (*remoteSet, error) {
	rctx, cancel := context.WithTimeout(ctx, r.opts.Refresh)
	defer cancel()
	_, now := r.expiry()
	r.ops.Add(1)
	nodes, err := r.opts.Client.ZRangeByScore(rctx, r.nodesKey(), &redis.ZRangeBy{Min: "(" + now, Max: "+inf", Count: maxNodes}).Result()
	if err != nil {
		r.errs.Add(1)
		return nil, fmt.Errorf("tracker %s: nodes: %w", r.opts.Stream, err)
	}
	slices.Sort(nodes)
	pipe := r.opts.Client.Pipeline()
	var cmds []*redis.MapStringStringCmd
	for _, n := range nodes {
		if n != r.opts.Node {
			cmds = append(cmds, pipe.HGetAll(rctx, r.membersKey(n)))
		}
	}
	rs := &remoteSet{m: map[wire.PeerID]member{}}
	if len(cmds) == 0 {
		return rs, nil
	}
	if err := r.exec(rctx, pipe); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for _, c := range cmds {
		for field, val := range c.Val() {
			if len(rs.m) >= r.opts.MaxMembers {
				break
			}
			id, err := strconv.ParseUint(field, 10, 64)
			if err != nil {
				continue
			}
			m, err := decodeMember(val)
			if err != nil {
				continue
			}
			if _, dup := rs.m[wire.PeerID(id)]; !dup {
				rs.m[wire.PeerID(id)] = m
				rs.ids = append(rs.ids, wire.PeerID(id))
			}
		}
	}
	slices.Sort(rs.ids)
	return rs, nil
}

// encodeMember is "addr upload rttMicros partners" (addr "-": none).
func encodeMember(m member) string {
	addr := m.addr
	if addr == "" || strings.ContainsAny(addr, " \t\r\n") {
		addr = "-"
	}
	return fmt.Sprintf("%s %d %d %d", addr, uint64(max(m.up, 0)), m.rtt.Microseconds(), m.partners)
}

// decodeMember reads a member another node wrote: bounded, four fields.
func decodeMember(s string) (member, error) {
	if len(s) > maxMemberValue {
		return member{}, errors.New("tracker: member value too long")
	}
	f := strings.Fields(s)
	if len(f) != 4 || len(f[0]) > 256 {
		return member{}, fmt.Errorf("tracker: member %q: want 4 fields", s)
	}
	up, err1 := strconv.ParseUint(f[1], 10, 64)
	rtt, err2 := strconv.ParseUint(f[2], 10, 32)
	np, err3 := strconv.ParseUint(f[3], 10, 16)
	if err := errors.Join(err1, err2, err3); err != nil {
		return member{}, fmt.Errorf("tracker: member %q: %w", s, err)
	}
	if f[0] == "-" {
		f[0] = ""
	}
	return member{addr: f[0], up: float64(up), rtt: time.Duration(rtt) * time.Microsecond, partners: int(np)}, nil
}
