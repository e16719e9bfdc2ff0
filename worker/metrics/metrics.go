// Package metrics counts what the gateway does and serves it as Prometheus metrics.
//
// Every worker is its own process, and a scrape reaches whichever worker the kernel
// hands the connection to, so the counts cannot live in process memory: they live in
// the shared memory file (store/shm), where every worker adds to the same counters with
// atomic instructions and any worker can read the whole-server totals. The file outlives
// worker restarts, so the counters only reset when the file is recreated (after a
// reboot), which Prometheus handles as an ordinary counter reset.
//
// A request is counted once, from its finished request record (Observe), so the
// metrics and request_logs agree by construction.
package metrics

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/store/shm"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

// Config is where /metrics is served and who may read it.
type Config struct {
	// Path is the URL path of the exposition (default /metrics).
	Path string `envconfig:"METRICS_PATH" default:"/metrics" desc:"URL path of the Prometheus metrics on every worker"`
	// Token, when set, must be sent as "Authorization: Bearer <token>"; empty leaves the
	// metrics open to anyone who can reach the port.
	Token string `envconfig:"METRICS_TOKEN" default:"" desc:"bearer token required to read the metrics; empty: no token needed"`
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Path == "" || c.Path[0] != '/' {
		return fmt.Errorf("metrics: METRICS_PATH must start with /, got %q", c.Path)
	}
	return nil
}

// MaxUnroutedSeries bounds the request series whose model label came from a request
// that reached no upstream (unknown model, bad request, refused key): that label is
// whatever the client sent, and without a bound a client could fill the shared file
// with made-up model names. Past the bound such requests count under the model
// OtherModel. Routed requests carry configured model names and are not bounded.
const MaxUnroutedSeries = 1000

// OtherModel is the model label of unrouted requests counted past MaxUnroutedSeries.
const OtherModel = "(other)"

// Family ids, the third byte of a series' slot name.
const (
	famRequest     = 'r'
	famRateLimited = 'l'
	famHealth      = 'h'
	famCircuit     = 'c'
)

// Words of the global slot.
const (
	gRetries      = 0
	gEpoch        = 1
	gBacklog      = 2
	gUnrouted     = 3 // request series created for unrouted requests
	gCacheDropped = 4
)

const (
	globalName  = "m|g"
	workersName = "m|w"
)

// Metrics records into the shared file and exposes its totals. It is safe for
// concurrent use; every process builds its own on the same region.
type Metrics struct {
	region *shm.Region
	logger hclog.Logger

	global  *shm.Slot
	workers *shm.Gauge

	requests *family
	limited  *family
	health   *family
	circuits *family

	// circuitShare holds this process's column of each circuit gauge.
	circuitShare atomic.Pointer[map[labelKey]*shm.Gauge]

	warned atomic.Bool // the shared file is full: said once
}

// New returns the metrics of this process on region. It counts this process in
// llm_proxy_workers until the region is closed or the process is reaped.
func New(region *shm.Region, logger hclog.Logger) (*Metrics, error) {
	if region == nil {
		return nil, errors.New("metrics: a shared region is required")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	global, err := region.Slot(globalName)
	if err != nil {
		return nil, fmt.Errorf("metrics: global counters: %w", err)
	}
	workers, err := region.Gauge(workersName)
	if err != nil {
		return nil, fmt.Errorf("metrics: worker gauge: %w", err)
	}
	// This process counts once however many Metrics it builds.
	workers.Add(1 - workers.Add(0))
	m := &Metrics{
		region:   region,
		logger:   logger.Named("metrics"),
		global:   global,
		workers:  workers,
		requests: newFamily(famRequest),
		limited:  newFamily(famRateLimited),
		health:   newFamily(famHealth),
		circuits: newFamily(famCircuit),
	}
	shares := map[labelKey]*shm.Gauge{}
	m.circuitShare.Store(&shares)
	return m, nil
}

// cacheLabel names the cache tier of a record; records of requests that never looked
// at the cache have none.
func cacheLabel(tier string) string {
	if tier == "" {
		return "none"
	}
	return tier
}

// Observe counts one finished request from its record: the request, its tokens and
// cost, its latency and time to first token, and its retries (attempts after the
// first). Call it once per record, next to the spool append. It does not allocate
// once the record's label tuple has been seen by this process.
func (m *Metrics) Observe(r *spool.Record) {
	k := labelKey{s: [4]string{r.Endpoint, r.Model, r.Upstream, cacheLabel(r.Cache)}, n: int64(r.Status)}
	s := m.requests.get(k)
	if s == nil {
		if s = m.requestSeries(k, r.Upstream == ""); s == nil {
			return
		}
	}
	s.Add(wRequests, 1)
	if r.PromptTokens > 0 {
		s.Add(wPrompt, int64(r.PromptTokens))
	}
	if r.CompletionTokens > 0 {
		s.Add(wCompletion, int64(r.CompletionTokens))
	}
	if r.CostMicroUSD > 0 {
		s.Add(wCost, r.CostMicroUSD)
	}
	lat := max(r.LatencyUs, 0)
	s.Add(wLatSum, lat)
	s.Add(wLatBuckets+bucket(latencyBoundsUs[:], lat), 1)
	if r.TtfbUs > 0 {
		s.Add(wTTFBSum, r.TtfbUs)
		s.Add(wTTFBBucket+bucket(ttfbBoundsUs[:], r.TtfbUs), 1)
	}
	if r.AttemptCount > 1 {
		m.global.Add(gRetries, int64(r.AttemptCount-1))
	}
}

// bucket returns the index of the first bound v does not exceed, len(bounds) for +Inf.
func bucket(bounds []int64, v int64) int {
	for i, b := range bounds {
		if v <= b {
			return i
		}
	}
	return len(bounds)
}

// requestSeries is Observe's slow path: the first record of a label tuple in this
// process. It returns nil when the shared file is full.
func (m *Metrics) requestSeries(k labelKey, unrouted bool) *shm.Slot {
	if unrouted && m.global.Load(gUnrouted) >= MaxUnroutedSeries {
		// Past the bound a tuple new to this process counts under OtherModel, even if
		// another process created its series before the bound was reached: telling
		// would need a scan of the file per request. The client's key is not cached,
		// so made-up names cost no memory either.
		k.s[1] = OtherModel
		if s := m.requests.get(k); s != nil {
			return s
		}
		unrouted = false // the OtherModel series are bounded by the other labels
	}
	_, s, created, err := m.requests.open(m.region, k, true)
	if err != nil {
		m.full(err)
		return nil
	}
	if created && unrouted {
		m.global.Add(gUnrouted, 1)
	}
	return s
}

// full reports once that the shared file has no room for another series; counts of
// new series are dropped from then on, the requests themselves are unaffected.
func (m *Metrics) full(err error) {
	if m.warned.CompareAndSwap(false, true) {
		m.logger.Error("metrics series dropped: the shared counters file is full (raise LLM_PROXY_SHM_SIZE)", "error", err)
	}
}

// RateLimited counts one request refused by a rate limit or budget; reason names the
// limit (such as "rpm", "tpm", "parallel", "budget").
func (m *Metrics) RateLimited(reason string) {
	k := labelKey{s: [4]string{reason}}
	s := m.limited.get(k)
	if s == nil {
		var err error
		if _, s, _, err = m.limited.open(m.region, k, true); err != nil {
			m.full(err)
			return
		}
	}
	s.Add(0, 1)
}

// SetUpstreamHealth records the latest health check result of an upstream. Health is
// the same for every worker, so the last writer wins.
func (m *Metrics) SetUpstreamHealth(upstream string, healthy bool) {
	k := labelKey{s: [4]string{2: upstream}}
	s := m.health.get(k)
	if s == nil {
		var err error
		if _, s, _, err = m.health.open(m.region, k, true); err != nil {
			m.full(err)
			return
		}
	}
	s.Store(0, b2i(healthy))
}

// SetCircuitOpen records whether this process's circuit breaker for a deployment is
// open (or half-open). Circuits are per worker, so the exposed value is the number of
// live workers whose circuit is open; a worker that dies stops counting when reaped.
func (m *Metrics) SetCircuitOpen(upstream, model string, open bool) {
	k := labelKey{s: [4]string{1: model, 2: upstream}}
	g := (*m.circuitShare.Load())[k]
	if g == nil {
		var err error
		if g, err = m.circuitGauge(k); err != nil {
			m.full(err)
			return
		}
	}
	// Only this process writes its column; the circuits family lock orders concurrent
	// setters of this process.
	m.circuits.mu.Lock()
	g.Add(b2i(open) - g.Add(0))
	m.circuits.mu.Unlock()
}

// circuitGauge creates the label slot of a circuit (plain, for discovery and labels)
// and the per-process gauge of the same name (for the value).
func (m *Metrics) circuitGauge(k labelKey) (*shm.Gauge, error) {
	name, _, _, err := m.circuits.open(m.region, k, false)
	if err != nil {
		return nil, err
	}
	g, err := m.region.Gauge(name)
	if err != nil {
		return nil, fmt.Errorf("metrics: circuit gauge: %w", err)
	}
	m.circuits.mu.Lock()
	defer m.circuits.mu.Unlock()
	old := *m.circuitShare.Load()
	shares := make(map[labelKey]*shm.Gauge, len(old)+1)
	for key, v := range old {
		shares[key] = v
	}
	shares[k] = g
	m.circuitShare.Store(&shares)
	return g, nil
}

// CacheWriteDropped counts one answer that was not cached because the cache write queue
// was full.
func (m *Metrics) CacheWriteDropped() { m.global.Add(gCacheDropped, 1) }

// SetPrimaryEpoch records the lease epoch of the current primary; the primary sets it
// when it gains the lease.
func (m *Metrics) SetPrimaryEpoch(epoch int64) { m.global.Store(gEpoch, epoch) }

// SetSpoolBacklog records how many bytes of request records wait in spool files for
// ingest; the primary sets it after each ingest pass.
func (m *Metrics) SetSpoolBacklog(bytes int64) { m.global.Store(gBacklog, bytes) }

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
