// bench_test.go holds the benchmarks: a realistic dataset seeded once with
// SQL, the query plans of the list queries on it, one benchmark per hot path
// over real HTTP at a fixed concurrency, the two ceilings of the main read,
// three ways of sending a statement, and the real binary's start time,
// memory and size. `make bench` runs them all (under 4 minutes on 2 cores):
//
//	go test -run '^$' -bench . -benchtime 5s -count 1 .
//
// Each benchmark reports req/s, p50-ms and p99-ms, allocs/op (client and
// server together, as both run in this process) and stmts/op; a summary
// table follows the last one. BENCH_CONCURRENCY (32) sets the clients.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/lib/pq"
)

// The dataset.
const (
	seedUsers     = 1_000
	seedArticles  = 10_000
	seedTags      = 200
	seedComments  = 50_000
	seedFavorites = 20_000
	seedFollows   = 5_000
)

func benchConcurrency() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_CONCURRENCY")); err == nil && n > 0 {
		return n
	}
	return 32
}

// BenchmarkConduit seeds one database and runs every benchmark against it,
// reads before writes so every read sees the seeded data. Its parts run on
// their own with, for example, -bench 'Conduit/read/feed'.
func BenchmarkConduit(b *testing.B) {
	start := time.Now()
	data := seedBenchDatabase(b)
	fmt.Printf("seeded %d users, %d articles, %d comments, %d favorites, %d follows in %v\n",
		seedUsers, seedArticles, seedComments, seedFavorites, seedFollows, time.Since(start).Round(time.Millisecond))
	printPlans(b, data)

	var results benchResults
	defer results.print()
	c := benchConcurrency()
	service := newBenchServer(b, data.dbURL, nil)

	b.Run("list", func(b *testing.B) {
		benchListCeilings(b, data, service, c, &results)
	})
	b.Run("read", func(b *testing.B) {
		anyone := func() string { return "" }
		reads := []loadOp{
			readOp("articles", func() string { return "/api/articles" }, anyone),
			readOp("articles-signed-in", func() string { return "/api/articles" }, data.anyToken),
			readOp("articles-by-tag", func() string { return "/api/articles?tag=" + pick(data.tags) }, data.anyToken),
			readOp("articles-by-author", func() string { return "/api/articles?author=" + pick(data.usernames) }, data.anyToken),
			readOp("feed", func() string { return "/api/articles/feed" }, data.followerToken),
			readOp("article", func() string { return "/api/articles/" + pick(data.slugs) }, data.anyToken),
			readOp("comments", func() string { return "/api/articles/" + pick(data.slugs) + "/comments" }, data.anyToken),
			readOp("profile", func() string { return "/api/profiles/" + pick(data.usernames) }, data.anyToken),
			readOp("tags", func() string { return "/api/tags" }, anyone),
		}
		for _, op := range reads {
			b.Run(op.name, func(b *testing.B) {
				results.add("read/"+op.name, benchLoad(b, service.url, service.statements, c, op))
			})
		}
	})
	b.Run("roundtrips", func(b *testing.B) {
		benchRoundTrips(b, data, c, &results)
	})
	b.Run("process", func(b *testing.B) {
		benchProcess(b, data, c, &results)
	})
	b.Run("write", func(b *testing.B) {
		body := strconv.Quote(benchText(rand.New(rand.NewPCG(1, 2)), 500))
		writes := []loadOp{
			{name: "create-article", weight: 1, do: func(ctx context.Context, cl *http.Client, url string) (int, error) {
				title := fmt.Sprintf("Benchmark article %x", rand.Uint64())
				article := `{"article":{"title":"` + title + `","description":"Written under load","body":` + body +
					`,"tagList":["` + pick(data.tags) + `","` + pick(data.tags) + `","` + pick(data.tags) + `"]}}`
				return loadSend(ctx, cl, "POST", url+"/api/articles", data.anyToken(), []byte(article))
			}},
			{name: "add-comment", weight: 1, do: func(ctx context.Context, cl *http.Client, url string) (int, error) {
				return loadSend(ctx, cl, "POST", url+"/api/articles/"+pick(data.slugs)+"/comments", data.anyToken(),
					[]byte(`{"comment":{"body":"Thank you for writing this: it answered the question I had."}}`))
			}},
			{name: "favorite", weight: 1, do: func(ctx context.Context, cl *http.Client, url string) (int, error) {
				return loadSend(ctx, cl, "POST", url+"/api/articles/"+pick(data.slugs)+"/favorite", data.anyToken(), nil)
			}},
		}
		for _, op := range writes {
			b.Run(op.name, func(b *testing.B) {
				results.add("write/"+op.name, benchLoad(b, service.url, service.statements, c, op))
			})
		}
	})
}

// benchListCeilings measures the main read, the first page of articles for
// an anonymous reader, against its two ceilings: the same HTTP stack sending
// a body of the same size with no database, and the same SQL through
// database/sql with no HTTP, both at the same concurrency.
func benchListCeilings(b *testing.B, data *benchData, service *benchServer, c int, results *benchResults) {
	res, err := http.Get(service.url + "/api/articles")
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		b.Fatalf("GET /api/articles = %d, %v", res.StatusCode, err)
	}
	ceiling := newHTTPCeiling(b, body)
	list := readOp("articles", func() string { return "/api/articles" }, func() string { return "" })

	var httpRate, dbRate, serviceRate float64
	b.Run("http-ceiling", func(b *testing.B) {
		httpRate = results.add("list/http-ceiling", benchLoad(b, ceiling, nil, c, list))
	})
	b.Run("db-ceiling", func(b *testing.B) {
		db := database{service.db}
		query := loadOp{name: "list SQL", weight: 1, do: func(ctx context.Context, _ *http.Client, _ string) (int, error) {
			articles, _, err := db.listArticles(ctx, 0, articleFilter{Limit: defaultPage})
			if err == nil && len(articles) != defaultPage {
				err = fmt.Errorf("%d articles, want %d", len(articles), defaultPage)
			}
			return http.StatusOK, err
		}}
		dbRate = results.add("list/db-ceiling", benchLoad(b, "", service.statements, c, query))
	})
	b.Run("service", func(b *testing.B) {
		serviceRate = results.add("list/service", benchLoad(b, service.url, service.statements, c, list))
		if lower := min(httpRate, dbRate); lower > 0 {
			pct := 100 * serviceRate / lower
			b.ReportMetric(pct, "%-of-ceiling")
			results.note("list", fmt.Sprintf("list articles: service %.0f req/s = %.0f%% of the lower ceiling (HTTP %.0f req/s with a %d-byte body, database %.0f req/s)",
				serviceRate, pct, httpRate, len(body), dbRate))
		}
	})
}

// newHTTPCeiling serves the body on GET /api/articles as encode sends one,
// through the middleware routes() wraps the API in (keep the two in step),
// with no database.
func newHTTPCeiling(b *testing.B, body []byte) string {
	s := newServer(nil, benchLogger(), benchConfig(b, "postgres://unused/unused"))
	mux := http.NewServeMux()
	mux.Handle("GET /api/articles", s.api(s.optionalUser(func(w http.ResponseWriter, r *http.Request) error {
		if _, _, err := pagination(r); err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		w.Write(body)
		return nil
	})))
	ts := httptest.NewServer(s.recoverPanics(s.logRequests(s.cors(s.withDeadline(jsonMuxErrors(mux))))))
	b.Cleanup(ts.Close)
	return ts.URL
}

// benchRoundTrips compares three ways of sending the service's statements:
// lib/pq's default (a Parse/Describe round trip, then a Bind/Execute one),
// binary_parameters (all in one round trip), and statements prepared once
// per connection (one round trip, and no planning once PostgreSQL settles
// on a generic plan). It measures the statements of the main read through
// database/sql at full concurrency and the statement of an article read
// from one client, then the first two ways through the whole service.
func benchRoundTrips(b *testing.B, data *benchData, c int, results *benchResults) {
	var sent []recordedStatement
	recorder := openBenchDB(b, data.dbURL, func(cn driver.Connector) driver.Connector { return hookedConnector{cn, recordStatements(&sent)} }, nil)
	if _, _, err := (database{recorder}).listArticles(context.Background(), 0, articleFilter{Limit: defaultPage}); err != nil {
		b.Fatal(err)
	}
	list := slices.Clone(sent)
	sent = sent[:0]
	if _, err := (database{recorder}).articleBySlug(context.Background(), 1, data.slugs[0]); err != nil {
		b.Fatal(err)
	}
	article := sent[0] // its arguments: the viewer, then the slug
	recorder.Close()

	type runner func(ctx context.Context, st int, args ...any) (*sql.Rows, error)
	modes := []struct {
		name   string
		binary bool
		open   func(db *sql.DB, statements []recordedStatement) runner
	}{
		{"plain", false, nil},
		{"binary_parameters", true, nil},
		{"prepared", false, func(db *sql.DB, statements []recordedStatement) runner {
			var prepared []*sql.Stmt
			for _, st := range statements {
				p, err := db.Prepare(st.query)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { p.Close() })
				prepared = append(prepared, p)
			}
			return func(ctx context.Context, st int, args ...any) (*sql.Rows, error) {
				return prepared[st].QueryContext(ctx, args...)
			}
		}},
	}
	sqlOp := func(name string, run runner, statements []recordedStatement, args func(st int) []any) loadOp {
		return loadOp{name: name, weight: 1, do: func(ctx context.Context, _ *http.Client, _ string) (int, error) {
			for i := range statements {
				rows, err := run(ctx, i, args(i)...)
				if err != nil {
					return 0, err
				}
				for rows.Next() {
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					return 0, err
				}
			}
			return http.StatusOK, nil
		}}
	}
	for _, m := range modes {
		db := openBenchDB(b, data.dbURL, nil, func(cfg *config) { cfg.db.BinaryParameters = m.binary })
		byText := func(statements []recordedStatement) runner {
			if m.open != nil {
				return m.open(db, statements)
			}
			return func(ctx context.Context, st int, args ...any) (*sql.Rows, error) {
				return db.QueryContext(ctx, statements[st].query, args...)
			}
		}
		listRun, articleRun := byText(list), byText([]recordedStatement{article})
		b.Run(fmt.Sprintf("list-sql-%d-clients/%s", c, m.name), func(b *testing.B) {
			op := sqlOp("list SQL", listRun, list, func(st int) []any { return list[st].args })
			results.add(fmt.Sprintf("roundtrips/list-sql-%d-clients/%s", c, m.name), benchLoad(b, "", nil, c, op))
		})
		b.Run("article-sql-1-client/"+m.name, func(b *testing.B) {
			op := sqlOp("article SQL", articleRun, []recordedStatement{article}, func(int) []any { return []any{article.args[0], pick(data.slugs)} })
			results.add("roundtrips/article-sql-1-client/"+m.name, benchLoad(b, "", nil, 1, op))
		})
	}
	for _, m := range modes[:2] {
		s := newBenchServer(b, data.dbURL, func(cfg *config) { cfg.db.BinaryParameters = m.binary })
		b.Run(fmt.Sprintf("articles-%d-clients/%s", c, m.name), func(b *testing.B) {
			op := readOp("articles", func() string { return "/api/articles" }, func() string { return "" })
			results.add(fmt.Sprintf("roundtrips/articles-%d-clients/%s", c, m.name), benchLoad(b, s.url, s.statements, c, op))
		})
	}
}

// benchProcess builds the binary as the Dockerfile does and measures the
// real process: its size, the time from exec to the first 200 from /healthz
// on the migrated database, and its resident memory after serving the main
// read at full concurrency.
func benchProcess(b *testing.B, data *benchData, c int, results *benchResults) {
	bin := buildService(b) // with the Dockerfile's flags
	info, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	size := float64(info.Size()) / 1e6
	list := readOp("articles", func() string { return "/api/articles" }, func() string { return "" })

	b.Run("list", func(b *testing.B) {
		var starts []time.Duration
		for range 5 {
			p := startBenchProcess(b, bin, data.dbURL)
			starts = append(starts, p.startup)
			p.stop(b)
		}
		slices.Sort(starts)
		p := startBenchProcess(b, bin, data.dbURL)
		defer p.stop(b)
		results.add("process/list", benchLoad(b, p.url, nil, c, list))
		peak, rss := p.memory(b)
		b.ReportMetric(ms(starts[len(starts)/2]), "start-ms")
		b.ReportMetric(peak, "peak-rss-MiB")
		b.ReportMetric(size, "binary-MB")
		results.note("process", fmt.Sprintf("process: binary %.1f MB (stripped); start to /healthz %v median, %v slowest of %d; resident memory %.1f MiB peak, %.1f MiB after the load",
			size, starts[len(starts)/2].Round(100*time.Microsecond), starts[len(starts)-1].Round(100*time.Microsecond), len(starts), peak, rss))
	})
}

type benchProc struct {
	cmd     *exec.Cmd
	url     string
	startup time.Duration
	stderr  *strings.Builder
}

func startBenchProcess(b *testing.B, bin, dbURL string) *benchProc {
	b.Helper()
	port := freePort(b)
	p := &benchProc{url: fmt.Sprintf("http://127.0.0.1:%d", port), stderr: &strings.Builder{}}
	p.cmd = exec.Command(bin)
	p.cmd.Env = []string{"PORT=" + strconv.Itoa(port), "DATABASE_URL=" + dbURL, "JWT_SECRET=" + testEnv(nil)("JWT_SECRET")}
	p.cmd.Stderr = p.stderr // its log goes to /dev/null
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	client := &http.Client{Timeout: time.Second}
	began := time.Now()
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	for deadline := began.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		res, err := client.Get(p.url + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				p.startup = time.Since(began)
				return p
			}
		}
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	b.Fatalf("the binary did not answer /healthz within 10s: %s", p.stderr)
	return nil
}

// memory returns the process's peak and current resident memory in MiB.
func (p *benchProc) memory(b *testing.B) (peak, current float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		name, value, _ := strings.Cut(scanner.Text(), ":")
		kB, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 64)
		switch name {
		case "VmHWM":
			peak = kB / 1024
		case "VmRSS":
			current = kB / 1024
		}
	}
	return peak, current
}

func (p *benchProc) stop(b *testing.B) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			b.Errorf("the binary exited with %v: %s", err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-done
		b.Errorf("the binary did not stop within 30s of SIGTERM")
	}
}

// benchRun is what one benchmark run measured.
type benchRun struct {
	rate     float64 // requests per second
	p50, p99 float64 // milliseconds
	allocs   float64 // allocations per request, in this process
	stmts    float64 // statements per request; -1 when not counted
}

// benchLoad runs b.N requests of ops from c clients and reports their
// throughput, latency and statements per request. An empty baseURL is for
// ops that call no server.
func benchLoad(b *testing.B, baseURL string, statements *atomic.Int64, c int, ops ...loadOp) benchRun {
	b.ReportAllocs()
	var stmts int64
	if statements != nil {
		stmts = statements.Load()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	report := runLoadN(context.Background(), baseURL, ops, c, int64(b.N))
	b.StopTimer()
	runtime.ReadMemStats(&after)
	total := report.Total()
	if total.Errors > 0 {
		b.Fatalf("%d of %d requests failed:\n%s", total.Errors, total.Requests, report)
	}
	run := benchRun{
		rate:   report.Rate(total),
		p50:    ms(total.Percentile(0.50)),
		p99:    ms(total.Percentile(0.99)),
		allocs: float64(after.Mallocs-before.Mallocs) / float64(max(total.Requests, 1)),
		stmts:  -1,
	}
	b.ReportMetric(run.rate, "req/s")
	b.ReportMetric(run.p50, "p50-ms")
	b.ReportMetric(run.p99, "p99-ms")
	if statements != nil {
		run.stmts = float64(statements.Load()-stmts) / float64(max(total.Requests, 1))
		b.ReportMetric(run.stmts, "stmts/op")
	}
	return run
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// readOp is a GET of the path path() picks, as the user token() picks.
func readOp(name string, path, token func() string) loadOp {
	return loadOp{name: name, weight: 1, do: func(ctx context.Context, c *http.Client, baseURL string) (int, error) {
		return loadSend(ctx, c, "GET", baseURL+path(), token(), nil)
	}}
}

func pick(s []string) string { return s[rand.IntN(len(s))] }

// The service under load.

// benchServer is the service's handler on a pool configured as run
// configures it, counting the statements it sends.
type benchServer struct {
	url        string
	db         *sql.DB
	statements *atomic.Int64
}

func benchLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

func benchConfig(b testing.TB, dbURL string) config {
	cfg, err := loadConfig(testEnv(map[string]string{"DATABASE_URL": dbURL}))
	if err != nil {
		b.Fatalf("loadConfig: %v", err)
	}
	return cfg
}

// openBenchDB opens a pool on the database at dbURL configured as openDB
// configures it; wrap, when not nil, wraps its connector, and configure,
// when not nil, changes the configuration first.
func openBenchDB(b *testing.B, dbURL string, wrap func(driver.Connector) driver.Connector, configure func(*config)) *sql.DB {
	cfg := benchConfig(b, dbURL)
	if configure != nil {
		configure(&cfg)
	}
	connector, err := pq.NewConnectorConfig(cfg.db)
	if err != nil {
		b.Fatal(err)
	}
	var c driver.Connector = connector
	if wrap != nil {
		c = wrap(c)
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(cfg.maxConns)
	db.SetMaxIdleConns(cfg.maxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(30 * time.Minute)
	b.Cleanup(func() { db.Close() })
	return db
}

// newBenchServer serves the API from the database at dbURL, counting the
// statements it sends; configure, when not nil, changes the configuration.
func newBenchServer(b *testing.B, dbURL string, configure func(*config)) *benchServer {
	var statements atomic.Int64
	db := openBenchDB(b, dbURL, func(c driver.Connector) driver.Connector { return hookedConnector{c, countStatements(&statements)} }, configure)
	cfg := benchConfig(b, dbURL)
	if configure != nil {
		configure(&cfg)
	}
	ts := httptest.NewServer(newServer(db, benchLogger(), cfg).routes())
	b.Cleanup(ts.Close)
	return &benchServer{url: ts.URL, db: db, statements: &statements}
}

// The dataset.

// benchData is what the load picks from in the seeded database.
type benchData struct {
	dbURL     string
	usernames []string
	tokens    []string // tokens[i] signs in usernames[i]
	followers []string // the tokens of the users who follow someone
	slugs     []string
	tags      []string
}

func (d *benchData) anyToken() string      { return pick(d.tokens) }
func (d *benchData) followerToken() string { return pick(d.followers) }

// seedBenchDatabase fills a new database with the dataset in a few SQL
// statements, deterministic for a given PostgreSQL version, then vacuums
// and analyzes it as a database that has been running a while would be.
func seedBenchDatabase(b testing.TB) *benchData {
	dbURL := newTestDatabase(b)
	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	words := "ARRAY['" + strings.Join(benchWords, "','") + "']"
	statements := []struct {
		what string
		sql  string
		args []any
	}{
		// The throwaway server commits asynchronously, and VACUUM cannot mark
		// pages all-visible before their commit is flushed: this one is.
		{"a flushed commit", `SET LOCAL synchronous_commit = on`, nil},
		{"seed the random numbers", `SELECT setseed(0.25)`, nil},
		{"a text maker", `
			CREATE FUNCTION pg_temp.words(n int) RETURNS text VOLATILE LANGUAGE sql AS $$
				SELECT string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
				FROM generate_series(1, n), (SELECT ` + words + ` AS w) words
			$$`, nil},
		{"users", `
			INSERT INTO users (username, email, password_hash, bio, created_at, updated_at)
			SELECT
				'user' || i,
				'user' || i || '@example.com',
				$1,
				'I write about ' || (` + words + `)[1 + i % 100] || ' and ' || (` + words + `)[1 + i * 7 % 100] || '.',
				now() - interval '2 years',
				now() - interval '2 years'
			FROM generate_series(1, $2::int) i`,
			[]any{dummyPasswordHash, seedUsers}},
		// Three distinct tags each: the first skewed towards the low numbers,
		// so some tags are much more used than others.
		{"articles", `
			INSERT INTO articles (slug, title, description, body, tags, author_id, created_at, updated_at)
			SELECT
				'seeded-article-' || i,
				'Seeded article ' || i || ': ' || initcap(w[1 + i * 7 % 100]) || ' and ' || w[1 + i * 13 % 100],
				'What article ' || i || ' says about ' || w[1 + i * 11 % 100],
				pg_temp.words(400 + i % 300),
				ARRAY(
					SELECT 'tag-' || lpad(t::text, 3, '0')
					FROM unnest(ARRAY[r.t1, (r.t1 + 1 + r.d2) % $2::int, (r.t1 + 67 + r.d3) % $2::int]) t
					ORDER BY 1),
				u.first + floor(random() * $3::int)::int,
				now() - ($1::int + 1 - i) * interval '50 minutes',
				now() - ($1::int + 1 - i) * interval '50 minutes'
			FROM generate_series(1, $1::int) i
			CROSS JOIN LATERAL (
				SELECT floor($2::int * random() ^ 2)::int AS t1, floor(random() * 66)::int AS d2, floor(random() * 66)::int AS d3
				WHERE i > 0) r
			CROSS JOIN (SELECT min(id) AS first FROM users) u
			CROSS JOIN (SELECT ` + words + ` AS w) words`,
			[]any{seedArticles, seedTags, seedUsers}},
		// Recent articles draw more favorites and comments.
		{"favorites", `
			INSERT INTO favorites (user_id, article_id)
			SELECT user_id, article_id
			FROM (
				SELECT DISTINCT
					u.first + floor(random() * $2::int)::int AS user_id,
					a.last - floor($3::int * random() ^ 1.5)::int AS article_id
				FROM generate_series(1, $1::int * 11 / 10),
					(SELECT min(id) AS first FROM users) u,
					(SELECT max(id) AS last FROM articles) a
			) pairs
			LIMIT $1::int`,
			[]any{seedFavorites, seedUsers, seedArticles}},
		{"favorite counts", `
			UPDATE articles a SET favorites_count = f.n
			FROM (SELECT article_id, count(*) AS n FROM favorites GROUP BY article_id) f
			WHERE a.id = f.article_id`, nil},
		// Some authors are much more followed than others.
		{"follows", `
			INSERT INTO follows (follower_id, followed_id)
			SELECT follower_id, followed_id
			FROM (
				SELECT DISTINCT
					u.first + floor(random() * $2::int)::int AS follower_id,
					u.first + floor($2::int * random() ^ 2)::int AS followed_id
				FROM generate_series(1, $1::int * 14 / 10), (SELECT min(id) AS first FROM users) u
			) pairs
			WHERE follower_id <> followed_id
			LIMIT $1::int`,
			[]any{seedFollows, seedUsers}},
		{"comments", `
			INSERT INTO comments (article_id, author_id, body, created_at, updated_at)
			SELECT
				a.last - floor($3::int * random() ^ 1.5)::int,
				u.first + floor(random() * $2::int)::int,
				pg_temp.words(8 + g % 40),
				now() - ($1::int + 1 - g) * interval '10 minutes',
				now() - ($1::int + 1 - g) * interval '10 minutes'
			FROM generate_series(1, $1::int) g,
				(SELECT min(id) AS first FROM users) u,
				(SELECT max(id) AS last FROM articles) a`,
			[]any{seedComments, seedUsers, seedArticles}},
	}
	for _, s := range statements {
		if _, err := tx.ExecContext(ctx, s.sql, s.args...); err != nil {
			b.Fatalf("seed %s: %v", s.what, err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE`); err != nil {
		b.Fatalf("vacuum: %v", err)
	}

	counts := []struct {
		table string
		want  int
	}{{"users", seedUsers}, {"articles", seedArticles}, {"comments", seedComments}, {"favorites", seedFavorites}, {"follows", seedFollows}}
	for _, c := range counts {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+c.table).Scan(&n); err != nil || n != c.want {
			b.Fatalf("seeded %d %s (%v), want %d", n, c.table, err, c.want)
		}
	}

	data := &benchData{dbURL: dbURL}
	tokens := newServer(nil, benchLogger(), benchConfig(b, dbURL))
	var ids []int64
	rows, err := db.QueryContext(ctx, `SELECT id, username, EXISTS (SELECT 1 FROM follows WHERE follower_id = u.id) FROM users u ORDER BY id`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var name string
		var follows bool
		if err := rows.Scan(&id, &name, &follows); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
		data.usernames = append(data.usernames, name)
		data.tokens = append(data.tokens, tokens.issueToken(id))
		if follows {
			data.followers = append(data.followers, data.tokens[len(data.tokens)-1])
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	for i := 1; i <= seedArticles; i++ {
		data.slugs = append(data.slugs, "seeded-article-"+strconv.Itoa(i))
	}
	rows, err = db.QueryContext(ctx, `SELECT DISTINCT unnest(tags) FROM articles ORDER BY 1`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var tag string
		if err := rows.Scan(&tag); err != nil {
			b.Fatal(err)
		}
		data.tags = append(data.tags, tag)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	rows.Close()
	return data
}

// benchWords are the words seeded bodies and comments are made of.
var benchWords = strings.Fields(`
	the of and to in is it that for you was with on as have but be they at one
	this from by hot word what some we can out other were all there when up use
	your how said an each she which do their time if will way about many then
	them write would like so these her long make thing see him two has look
	more day could go come did number sound no most people my over know water
	than call first who may down side been now find any new work part take get
	place made live where after back little only round man year came show every
	good me give our under name very through just form sentence great think say
	help low line differ turn cause much mean before move right boy old too same
	database query index latency throughput server client request response`)

// benchText is n words picked at random by r.
func benchText(r *rand.Rand, n int) string {
	words := make([]string, n)
	for i := range words {
		words[i] = benchWords[r.IntN(len(benchWords))]
	}
	return strings.Join(words, " ")
}

// Query plans.

// printPlans runs EXPLAIN ANALYZE on the statements of each list on the
// seeded data, exactly as the service sends them, and prints which scan
// each reads the articles with (the whole plans with -v).
func printPlans(b *testing.B, data *benchData) {
	var sent []recordedStatement
	db := openBenchDB(b, data.dbURL, func(c driver.Connector) driver.Connector { return hookedConnector{c, recordStatements(&sent)} }, nil)
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()

	follower := data.usernames[0]
	var followerID int64
	err := db.QueryRowContext(ctx, `
		SELECT follower_id FROM follows GROUP BY follower_id ORDER BY count(*) DESC, follower_id LIMIT 1`).Scan(&followerID)
	if err != nil {
		b.Fatal(err)
	}
	db.QueryRowContext(ctx, `SELECT username FROM users WHERE id = $1`, followerID).Scan(&follower)
	var favoriter string
	db.QueryRowContext(ctx, `
		SELECT u.username FROM favorites f JOIN users u ON u.id = f.user_id
		GROUP BY u.username ORDER BY count(*) DESC, u.username LIMIT 1`).Scan(&favoriter)
	var popularTag, rareTag string
	db.QueryRowContext(ctx, `
		SELECT (array_agg(tag ORDER BY n DESC, tag))[1], (array_agg(tag ORDER BY n, tag))[1]
		FROM (SELECT tag, count(*) AS n FROM articles, unnest(tags) tag GROUP BY tag) t`).Scan(&popularTag, &rareTag)

	lists := []struct {
		name   string
		viewer int64
		filter articleFilter
	}{
		{"all articles", 0, articleFilter{}},
		{"articles by popular tag " + popularTag, followerID, articleFilter{Tag: popularTag}},
		{"articles by rare tag " + rareTag, followerID, articleFilter{Tag: rareTag}},
		{"articles by author " + data.usernames[1], followerID, articleFilter{Author: data.usernames[1]}},
		{"articles favorited by " + favoriter, followerID, articleFilter{FavoritedBy: favoriter}},
		{"feed of " + follower, followerID, articleFilter{FeedOf: followerID}},
	}
	fmt.Println("query plans on the seeded data (EXPLAIN ANALYZE; run with -v for the whole plans):")
	show := func(name string, statements []recordedStatement) (seqScans int) {
		for i, st := range statements {
			plan := explain(b, db, st)
			fmt.Printf("  %s, statement %d of %d: %s\n", name, i+1, len(statements), planSummary(plan))
			if testing.Verbose() {
				fmt.Printf("%s\n%s\n", indent(st.query), indent(plan))
			}
			seqScans += strings.Count(plan, "Seq Scan on articles")
		}
		return seqScans
	}
	seqScans := 0
	for i, l := range lists {
		sent = sent[:0]
		l.filter.Limit = defaultPage
		if _, _, err := (database{db}).listArticles(ctx, l.viewer, l.filter); err != nil {
			b.Fatalf("%s: %v", l.name, err)
		}
		n := show(l.name, slices.Clone(sent))
		if i > 0 { // the filters
			seqScans += n
		}
	}
	sent = sent[:0]
	if _, err := (database{db}).tags(ctx); err != nil {
		b.Fatal(err)
	}
	show("tags", slices.Clone(sent))
	fmt.Printf("  sequential scans of articles in the filtered lists: %d\n", seqScans)
}

type recordedStatement struct {
	query string
	args  []any
}

func explain(b *testing.B, db *sql.DB, st recordedStatement) string {
	rows, err := db.Query(`EXPLAIN (ANALYZE, BUFFERS) `+st.query, st.args...)
	if err != nil {
		b.Fatalf("explain %s: %v", st.query, err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			b.Fatal(err)
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// planSummary names the scans of a plan and its execution time.
func planSummary(plan string) string {
	var scans []string
	var took string
	for _, line := range strings.Split(plan, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "->"))
		if strings.Contains(line, "Scan") && !strings.HasPrefix(line, "Buffers") {
			scan, _, _ := strings.Cut(line, "  (")
			if !slices.Contains(scans, scan) {
				scans = append(scans, scan)
			}
		}
		if t, ok := strings.CutPrefix(line, "Execution Time: "); ok {
			took = t
		}
	}
	return took + ": " + strings.Join(scans, "; ")
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}

// recordStatements is an onStatement hook that keeps the queries sent, but
// for the benchmark's own EXPLAINs, with their arguments.
func recordStatements(sent *[]recordedStatement) func(string, []driver.NamedValue) {
	return func(query string, args []driver.NamedValue) {
		if strings.HasPrefix(query, "EXPLAIN") {
			return
		}
		st := recordedStatement{query: query}
		for _, a := range args {
			st.args = append(st.args, a.Value)
		}
		*sent = append(*sent, st)
	}
}

// Results.

// benchResults collects the last run of each benchmark for a summary.
type benchResults struct {
	mu       sync.Mutex
	names    []string
	rows     map[string]benchRun
	noteKeys []string
	notes    map[string]string
}

// add records the run's figures under name and returns its rate.
func (r *benchResults) add(name string, run benchRun) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rows == nil {
		r.rows = map[string]benchRun{}
	}
	if _, ok := r.rows[name]; !ok {
		r.names = append(r.names, name)
	}
	r.rows[name] = run
	return run.rate
}

// note keeps a line for the summary under key; a later run's replaces it.
func (r *benchResults) note(key, s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.notes == nil {
		r.notes = map[string]string{}
	}
	if _, ok := r.notes[key]; !ok {
		r.noteKeys = append(r.noteKeys, key)
	}
	r.notes[key] = s
}

func (r *benchResults) print() {
	if len(r.names) == 0 {
		return
	}
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\treq/s\tp50 ms\tp99 ms\tallocs/req\tstatements/req\t")
	for _, name := range r.names {
		row := r.rows[name]
		stmts := "-"
		if row.stmts >= 0 {
			stmts = fmt.Sprintf("%.2f", row.stmts)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f\t%.0f\t%s\t\n", name, row.rate, row.p50, row.p99, row.allocs, stmts)
	}
	tw.Flush()
	fmt.Printf("\nsummary (%d clients, GOMAXPROCS %d):\n%s", benchConcurrency(), runtime.GOMAXPROCS(0), sb.String())
	for _, key := range r.noteKeys {
		fmt.Println(r.notes[key])
	}
}
