// load_test.go holds the load driver the benchmarks and the soak share: a
// fixed number of clients sending a weighted mix of requests to a base URL
// for a time or a number of requests, and a report of throughput, latency
// percentiles and statuses per operation.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// loadOp is one kind of request in a load mix. do sends one request and
// returns its status (0 when none came back) and an error when the outcome
// is a failure; weight is its share of the mix.
type loadOp struct {
	name   string
	weight int
	do     func(ctx context.Context, c *http.Client, baseURL string) (status int, err error)
}

// runLoad sends ops from concurrency clients until duration has passed or
// ctx is done, and reports what happened. Requests cut short by the end of
// the run are not counted.
func runLoad(ctx context.Context, baseURL string, ops []loadOp, concurrency int, duration time.Duration) loadReport {
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	return driveLoad(ctx, baseURL, ops, concurrency, 0)
}

// runLoadN is runLoad bounded by a number of requests instead of a time.
func runLoadN(ctx context.Context, baseURL string, ops []loadOp, concurrency int, requests int64) loadReport {
	return driveLoad(ctx, baseURL, ops, concurrency, requests)
}

func driveLoad(ctx context.Context, baseURL string, ops []loadOp, concurrency int, limit int64) loadReport {
	if len(ops) == 0 || concurrency < 1 {
		panic("runLoad: need at least one op and one client")
	}
	var cumulative []int // the ops' weights, summed, to pick one by weight
	total := 0
	for _, op := range ops {
		total += max(op.weight, 0)
		cumulative = append(cumulative, total)
	}
	if total == 0 {
		panic("runLoad: the ops' weights add up to zero")
	}
	client := newLoadClient(concurrency)
	defer client.CloseIdleConnections()

	var issued atomic.Int64
	perWorker := make([][]opStats, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range concurrency {
		stats := newOpStats(ops)
		perWorker[w] = stats
		wg.Go(func() {
			for ctx.Err() == nil && (limit == 0 || issued.Add(1) <= limit) {
				n := rand.IntN(total)
				i, _ := slices.BinarySearch(cumulative, n+1)
				began := time.Now()
				status, err := ops[i].do(ctx, client, baseURL)
				took := time.Since(began)
				if err != nil && ctx.Err() != nil {
					return // cut short by the end of the run
				}
				stats[i].record(took, status, err)
			}
		})
	}
	wg.Wait()
	report := loadReport{Concurrency: concurrency, Elapsed: time.Since(start), Ops: newOpStats(ops)}
	for _, stats := range perWorker {
		for i := range stats {
			report.Ops[i].merge(&stats[i])
		}
	}
	return report
}

// newLoadClient keeps one connection per client open: the default of two
// idle connections per host would open a new one for most requests.
func newLoadClient(concurrency int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        2 * concurrency,
			MaxIdleConnsPerHost: concurrency,
			IdleConnTimeout:     90 * time.Second,
		},
	}
}

// loadSend sends one request with an optional token ("" for none) and JSON
// body (nil for none), reads the answer to the end so the connection is
// reused, and returns an error for a status outside 2xx.
func loadSend(ctx context.Context, c *http.Client, method, url, token string, body []byte) (int, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, reader)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return res.StatusCode, fmt.Errorf("%s %s: read body: %w", method, req.URL.Path, err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, fmt.Errorf("%s %s: status %d", method, req.URL.Path, res.StatusCode)
	}
	return res.StatusCode, nil
}

// loadReport is what a load run did, per op in the order of the mix.
type loadReport struct {
	Concurrency int
	Elapsed     time.Duration
	Ops         []opStats
}

// opStats counts the requests of one op: their latencies, statuses (0 for
// no response) and failures, with a few of the failures' messages.
type opStats struct {
	Name     string
	Requests int64
	Errors   int64
	Statuses map[int]int64
	Samples  []string // up to maxErrorSamples distinct error messages
	hist     latencyHistogram
}

const maxErrorSamples = 5

func newOpStats(ops []loadOp) []opStats {
	stats := make([]opStats, len(ops))
	for i, op := range ops {
		stats[i] = opStats{Name: op.name, Statuses: map[int]int64{}}
	}
	return stats
}

func (s *opStats) record(took time.Duration, status int, err error) {
	s.Requests++
	s.Statuses[status]++
	s.hist.record(took)
	if err != nil {
		s.Errors++
		if msg := err.Error(); len(s.Samples) < maxErrorSamples && !slices.Contains(s.Samples, msg) {
			s.Samples = append(s.Samples, msg)
		}
	}
}

func (s *opStats) merge(o *opStats) {
	s.Requests += o.Requests
	s.Errors += o.Errors
	for status, n := range o.Statuses {
		s.Statuses[status] += n
	}
	for _, msg := range o.Samples {
		if len(s.Samples) < maxErrorSamples && !slices.Contains(s.Samples, msg) {
			s.Samples = append(s.Samples, msg)
		}
	}
	s.hist.merge(&o.hist)
}

// Percentile returns the latency below which a fraction p of the requests
// answered, within 3%.
func (s *opStats) Percentile(p float64) time.Duration { return s.hist.percentile(p) }

// Max is the slowest request's latency.
func (s *opStats) Max() time.Duration { return s.hist.max }

// Mean is the average latency.
func (s *opStats) Mean() time.Duration {
	if s.hist.count == 0 {
		return 0
	}
	return s.hist.sum / time.Duration(s.hist.count)
}

// Total merges every op's figures into one, named "total".
func (r loadReport) Total() opStats {
	total := opStats{Name: "total", Statuses: map[int]int64{}}
	for i := range r.Ops {
		total.merge(&r.Ops[i])
	}
	return total
}

// Op returns the figures of the op named name.
func (r loadReport) Op(name string) (opStats, bool) {
	for _, s := range r.Ops {
		if s.Name == name {
			return s, true
		}
	}
	return opStats{}, false
}

// Rate is the op's requests per second over the run.
func (r loadReport) Rate(s opStats) float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(s.Requests) / r.Elapsed.Seconds()
}

// String is a table: one line per op, then the total, then error samples.
func (r loadReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d clients for %v\n", r.Concurrency, r.Elapsed.Round(time.Millisecond))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\trequests\treq/s\tp50\tp95\tp99\tmax\terrors\tstatuses\t")
	rows := append(slices.Clone(r.Ops), r.Total())
	for _, s := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%v\t%v\t%v\t%v\t%d\t%s\t\n", s.Name, s.Requests, r.Rate(s),
			roundLatency(s.Percentile(0.50)), roundLatency(s.Percentile(0.95)),
			roundLatency(s.Percentile(0.99)), roundLatency(s.Max()), s.Errors, statusCounts(s.Statuses))
	}
	tw.Flush()
	for _, s := range r.Ops {
		for _, msg := range s.Samples {
			fmt.Fprintf(&b, "%s error: %s\n", s.Name, msg)
		}
	}
	return b.String()
}

func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// statusCounts reads "200:1234 503:5", statuses in order; 0 is no response.
func statusCounts(statuses map[int]int64) string {
	var codes []int
	for code := range statuses {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	var parts []string
	for _, code := range codes {
		parts = append(parts, fmt.Sprintf("%d:%d", code, statuses[code]))
	}
	return strings.Join(parts, " ")
}

// latencyHistogram counts latencies in microseconds in buckets 1/32 of a
// power of two wide, so percentiles are within 3% and memory stays fixed
// however long a run lasts.
type latencyHistogram struct {
	counts [histBuckets]int64
	count  int64
	sum    time.Duration
	max    time.Duration
}

const (
	histSubBits = 5 // 32 buckets per power of two
	histExact   = 2 << histSubBits
	// histBuckets reaches 2^36 µs, about 19 hours.
	histBuckets = histExact + (36-histSubBits-1)<<histSubBits
)

func histIndex(us uint64) int {
	if us < histExact {
		return int(us)
	}
	shift := bits.Len64(us) - histSubBits - 1
	i := histExact + (shift-1)<<histSubBits + int(us>>shift) - 1<<histSubBits
	return min(i, histBuckets-1)
}

// histUpper is the largest latency, in microseconds, bucket i holds.
func histUpper(i int) uint64 {
	if i < histExact {
		return uint64(i)
	}
	shift := (i-histExact)>>histSubBits + 1
	mantissa := uint64(i-histExact)&(1<<histSubBits-1) + 1<<histSubBits
	return (mantissa+1)<<shift - 1
}

func (h *latencyHistogram) record(d time.Duration) {
	h.counts[histIndex(uint64(max(d, 0)/time.Microsecond))]++
	h.count++
	h.sum += d
	h.max = max(h.max, d)
}

func (h *latencyHistogram) merge(o *latencyHistogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.count += o.count
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

func (h *latencyHistogram) percentile(p float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	rank := int64(math.Ceil(p * float64(h.count)))
	var seen int64
	for i, n := range h.counts {
		seen += n
		if seen >= max(rank, 1) {
			return min(time.Duration(histUpper(i))*time.Microsecond, h.max)
		}
	}
	return h.max
}
