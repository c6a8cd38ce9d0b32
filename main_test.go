// main_test.go holds the test harness: a throwaway PostgreSQL, a migrated
// template database copied for each test, and an HTTP client for the API.
// It also tests start-up: the real run, configuration and the schema step.
//
// With TEST_DATABASE_URL (or DATABASE_URL) set, tests use that server;
// otherwise they start their own from the PostgreSQL server binaries.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
)

// testPostgres is the server every test's database lives on.
var testPostgres struct {
	adminURL string // a superuser connection to its "postgres" database
	template string // a migrated database to copy
	next     atomic.Int64
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	adminURL := cmp.Or(os.Getenv("TEST_DATABASE_URL"), os.Getenv("DATABASE_URL"))
	if adminURL == "" {
		pg, err := startPostgres()
		if err != nil {
			fmt.Fprintln(os.Stderr, "start a throwaway PostgreSQL:", err)
			return 1
		}
		defer pg.remove()
		adminURL = pg.url("postgres")
	}
	testPostgres.adminURL = adminURL
	testPostgres.template = fmt.Sprintf("conduit_template_%d", os.Getpid())
	if err := createTemplate(); err != nil {
		fmt.Fprintln(os.Stderr, "create the template database:", err)
		return 1
	}
	defer dropDatabase(testPostgres.template)
	return m.Run()
}

func createTemplate() error {
	if err := adminExec(`CREATE DATABASE ` + pq.QuoteIdentifier(testPostgres.template)); err != nil {
		return err
	}
	db, err := sql.Open("postgres", databaseURL(testPostgres.template))
	if err != nil {
		return err
	}
	defer db.Close()
	return applySchema(context.Background(), db)
}

func adminExec(query string) error {
	db, err := sql.Open("postgres", testPostgres.adminURL)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(query)
	return err
}

func dropDatabase(name string) error {
	return adminExec(`DROP DATABASE IF EXISTS ` + pq.QuoteIdentifier(name) + ` WITH (FORCE)`)
}

// databaseURL is the admin URL pointed at another database.
func databaseURL(name string) string {
	u, err := url.Parse(testPostgres.adminURL)
	if err != nil {
		panic(err)
	}
	u.Path = "/" + name
	return u.String()
}

// newTestDatabase creates an empty-but-migrated database for one test and
// returns its URL; it is dropped when the test ends.
func newTestDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("conduit_test_%d_%d", os.Getpid(), testPostgres.next.Add(1))
	err := adminExec(`CREATE DATABASE ` + pq.QuoteIdentifier(name) + ` TEMPLATE ` + pq.QuoteIdentifier(testPostgres.template))
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(name); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return databaseURL(name)
}

// newEmptyDatabase creates a database without the schema, for the tests of
// the schema step, and returns its name; it is dropped when the test ends.
func newEmptyDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("conduit_empty_%d_%d", os.Getpid(), testPostgres.next.Add(1))
	if err := adminExec(`CREATE DATABASE ` + pq.QuoteIdentifier(name)); err != nil {
		t.Fatalf("create empty database: %v", err)
	}
	t.Cleanup(func() { dropDatabase(name) })
	return name
}

// pgServer is a PostgreSQL server started from the installed binaries in a
// temporary directory.
type pgServer struct {
	bin  string
	dir  string
	port int
	as   *syscall.Credential // the postgres user, when the tests run as root
	cmd  *exec.Cmd
	done chan struct{} // closed when the running server exits
}

func startPostgres() (*pgServer, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "conduit-pg-")
	if err != nil {
		return nil, err
	}
	pg := &pgServer{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		if pg.as, err = postgresUser(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(pg.as.Uid), int(pg.as.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	initdb := pg.command("initdb", "-D", pg.dataDir(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if err := pg.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return pg, nil
}

// postgresBinDir finds initdb and postgres on PATH or in Debian's location.
func postgresBinDir() (string, error) {
	if path, err := exec.LookPath("initdb"); err == nil {
		if path, err = filepath.EvalSymlinks(path); err == nil {
			return filepath.Dir(path), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return pgVersion(b) - pgVersion(a) })
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found on PATH or under /usr/lib/postgresql/*/bin: " +
		"install them (Debian/Ubuntu: apt-get update && apt-get install -y postgresql) or set TEST_DATABASE_URL to a server the tests may create databases on")
}

func pgVersion(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func postgresUser() (*syscall.Credential, error) {
	u, err := osuser.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (pg *pgServer) dataDir() string { return filepath.Join(pg.dir, "data") }

func (pg *pgServer) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.as}
	return cmd
}

// start runs postgres on a free port (the same one on a restart) and waits
// until it accepts connections. The server dies with the test process.
func (pg *pgServer) start() error {
	if pg.port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		pg.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	cmd := pg.command("postgres", "-D", pg.dataDir(), "-p", strconv.Itoa(pg.port), "-k", pg.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=300",
		// Durability is worth nothing to a throwaway server.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	logFile, err := os.OpenFile(filepath.Join(pg.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	pg.cmd, pg.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		logFile.Close()
		close(done)
	}(pg.done)

	db, err := sql.Open("postgres", pg.url("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := db.Ping()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			pg.stop()
			log, _ := os.ReadFile(filepath.Join(pg.dir, "server.log"))
			return fmt.Errorf("postgres did not accept connections within 30s: %v\n%s", err, log)
		}
	}
}

// stop shuts the server down the way a database restart does: it
// disconnects every client and keeps the data for a restart (with
// synchronous_commit off, an immediate shutdown could lose the last commits).
func (pg *pgServer) stop() {
	if pg.cmd == nil {
		return
	}
	pg.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-pg.done:
	case <-time.After(10 * time.Second):
		pg.cmd.Process.Kill()
		<-pg.done
	}
	pg.cmd = nil
}

// remove stops the server and deletes its files.
func (pg *pgServer) remove() {
	pg.stop()
	os.RemoveAll(pg.dir)
}

func (pg *pgServer) url(dbname string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, dbname)
}

// The API under test.

// testAPI is a running service on its own database, reached over HTTP.
type testAPI struct {
	t          testing.TB
	url        string
	srv        *server
	db         *sql.DB
	statements *atomic.Int64 // statements sent to the database
	logs       *syncBuffer
}

// testEnv is the environment tests run the service with; overrides win.
func testEnv(overrides map[string]string) func(string) string {
	env := map[string]string{
		"JWT_SECRET":           "test-secret-test-secret-test-secret",
		"AUTH_RATE_PER_MINUTE": "1000000", // tests register many users from one address
	}
	for k, v := range overrides {
		env[k] = v
	}
	return func(key string) string { return env[key] }
}

func newTestAPI(t testing.TB) *testAPI {
	return newTestAPIWithEnv(t, nil)
}

func newTestAPIWithEnv(t testing.TB, env map[string]string) *testAPI {
	t.Helper()
	return newTestAPIOn(t, newTestDatabase(t), env)
}

// newTestAPIOn serves the API from the database at dbURL.
func newTestAPIOn(t testing.TB, dbURL string, env map[string]string) *testAPI {
	t.Helper()
	cfg, err := loadConfig(testEnv(mergeEnv(map[string]string{"DATABASE_URL": dbURL}, env)))
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	connector, err := pq.NewConnectorConfig(cfg.db)
	if err != nil {
		t.Fatal(err)
	}
	var statements atomic.Int64
	db := sql.OpenDB(hookedConnector{connector, countStatements(&statements)})
	db.SetMaxOpenConns(cfg.maxConns)
	db.SetMaxIdleConns(cfg.maxConns)
	logs := &syncBuffer{}
	srv := newServer(db, slog.New(slog.NewJSONHandler(logs, nil)), cfg)
	ts := httptest.NewServer(srv.routes())
	t.Cleanup(func() {
		ts.Close()
		db.Close()
	})
	return &testAPI{t: t, url: ts.URL, srv: srv, db: db, statements: &statements, logs: logs}
}

func mergeEnv(a, b map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

// testResponse is an answer from the API.
type testResponse struct {
	t      testing.TB
	req    string
	status int
	header http.Header
	body   []byte
}

// call sends a request with an optional token ("" for none) and body: a
// string is sent as it is, anything else as JSON.
func (a *testAPI) call(method, path, token string, body any) *testResponse {
	a.t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, a.url+path, reader)
	if err != nil {
		a.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	return a.do(req)
}

func (a *testAPI) do(req *http.Request) *testResponse {
	a.t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return &testResponse{t: a.t, req: req.Method + " " + req.URL.RequestURI(), status: res.StatusCode, header: res.Header, body: body}
}

// want fails the test unless the response has the status, then decodes its
// JSON body into v (when v is not nil).
func (r *testResponse) want(status int, v any) {
	r.t.Helper()
	if r.status != status {
		r.t.Fatalf("%s: status %d, want %d; body: %s", r.req, r.status, status, r.body)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			r.t.Fatalf("%s: decode %s: %v", r.req, r.body, err)
		}
	}
}

// wantError checks an error response: its status, the RealWorld error body,
// and that one of its messages contains fragment.
func (r *testResponse) wantError(status int, fragment string) {
	r.t.Helper()
	var body struct {
		Errors struct {
			Body []string `json:"body"`
		} `json:"errors"`
	}
	r.want(status, &body)
	if len(body.Errors.Body) == 0 {
		r.t.Fatalf("%s: error body %s has no messages", r.req, r.body)
	}
	if !slices.ContainsFunc(body.Errors.Body, func(m string) bool { return strings.Contains(m, fragment) }) {
		r.t.Fatalf("%s: errors %q, want one containing %q", r.req, body.Errors.Body, fragment)
	}
}

// The API's JSON, as a client decodes it.

type testUser struct {
	Email    string `json:"email"`
	Token    string `json:"token"`
	Username string `json:"username"`
	Bio      string `json:"bio"`
	Image    string `json:"image"`
}

type testProfile struct {
	Username  string `json:"username"`
	Bio       string `json:"bio"`
	Image     string `json:"image"`
	Following bool   `json:"following"`
}

type testArticle struct {
	Slug           string      `json:"slug"`
	Title          string      `json:"title"`
	Description    string      `json:"description"`
	Body           *string     `json:"body"`
	TagList        []string    `json:"tagList"`
	CreatedAt      string      `json:"createdAt"`
	UpdatedAt      string      `json:"updatedAt"`
	Favorited      bool        `json:"favorited"`
	FavoritesCount int         `json:"favoritesCount"`
	Author         testProfile `json:"author"`
}

type testComment struct {
	ID        int64       `json:"id"`
	CreatedAt string      `json:"createdAt"`
	UpdatedAt string      `json:"updatedAt"`
	Body      string      `json:"body"`
	Author    testProfile `json:"author"`
}

const testPassword = "correct horse battery"

// register creates a user named name and returns it with its token.
func (a *testAPI) register(name string) testUser {
	a.t.Helper()
	var res struct{ User testUser }
	a.call("POST", "/api/users", "", map[string]any{"user": map[string]any{
		"username": name, "email": name + "@example.com", "password": testPassword,
	}}).want(http.StatusCreated, &res)
	return res.User
}

// seedUser stores a user straight in the database, for tests that need many
// users and are not about registering them: hashing a password costs ~100 ms
// of CPU, and much more under the race detector.
func (a *testAPI) seedUser(name string) testUser {
	a.t.Helper()
	var id int64
	err := a.db.QueryRow(`
		INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3) RETURNING id`,
		name, name+"@example.com", dummyPasswordHash).Scan(&id)
	if err != nil {
		a.t.Fatalf("seed user %s: %v", name, err)
	}
	return testUser{Username: name, Email: name + "@example.com", Token: a.srv.issueToken(id)}
}

func (a *testAPI) createArticle(token, title string, tags ...string) testArticle {
	a.t.Helper()
	var res struct{ Article testArticle }
	a.call("POST", "/api/articles", token, map[string]any{"article": map[string]any{
		"title": title, "description": "About " + title, "body": "The body of " + title, "tagList": tags,
	}}).want(http.StatusCreated, &res)
	return res.Article
}

func (a *testAPI) article(token, slug string) testArticle {
	a.t.Helper()
	var res struct{ Article testArticle }
	a.call("GET", "/api/articles/"+slug, token, nil).want(http.StatusOK, &res)
	return res.Article
}

type testArticles struct {
	Articles      []testArticle `json:"articles"`
	ArticlesCount int           `json:"articlesCount"`
}

func (a *testAPI) articles(token, query string) testArticles {
	a.t.Helper()
	var res testArticles
	a.call("GET", "/api/articles"+query, token, nil).want(http.StatusOK, &res)
	return res
}

// hookedConnector calls onStatement with each statement sent through its
// connections: tests count them, and the benchmark records them to explain.
type hookedConnector struct {
	driver.Connector
	onStatement func(query string, args []driver.NamedValue)
}

func (c hookedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &hookedConn{conn.(pqConn), c.onStatement}, nil
}

// pqConn is what database/sql uses of a lib/pq connection.
type pqConn interface {
	driver.Conn
	driver.QueryerContext
	driver.ExecerContext
	driver.ConnBeginTx
	driver.Pinger
}

type hookedConn struct {
	pqConn
	onStatement func(query string, args []driver.NamedValue)
}

func (c *hookedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.onStatement(query, args)
	return c.pqConn.QueryContext(ctx, query, args)
}

func (c *hookedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.onStatement(query, args)
	return c.pqConn.ExecContext(ctx, query, args)
}

// countStatements is an onStatement hook that counts into n.
func countStatements(n *atomic.Int64) func(string, []driver.NamedValue) {
	return func(string, []driver.NamedValue) { n.Add(1) }
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start-up.

// launchRun starts the real run on port 0 with env. The address it listens
// on arrives on addr, and its result on result once stop is called.
func launchRun(env map[string]string) (addr <-chan string, stop func(), result <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, testEnv(mergeEnv(map[string]string{"PORT": "0"}, env)), logs)
		logs.Close()
	}()
	addrc := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(out)
		for scanner.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(scanner.Bytes(), &line) == nil && line.Msg == "listening" {
				_, port, _ := net.SplitHostPort(line.Addr)
				addrc <- "127.0.0.1:" + port
			}
		}
	}()
	return addrc, cancel, errc
}

// startRun launches run and waits until it listens.
func startRun(t *testing.T, env map[string]string) (addr string, stop func(), result <-chan error) {
	t.Helper()
	addrc, stop, result := launchRun(env)
	t.Cleanup(stop)
	select {
	case addr = <-addrc:
	case err := <-result:
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not listen within 30s")
	}
	return addr, stop, result
}

// waitHealthy polls /healthz at addr until it answers 200.
func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatalf("%s/healthz did not answer 200 within 10s", addr)
}

func TestRunServesAndShutsDown(t *testing.T) {
	t.Parallel()
	addr, stop, result := startRun(t, map[string]string{"DATABASE_URL": newTestDatabase(t)})
	waitHealthy(t, addr)
	res, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/readyz = %d, want 200", res.StatusCode)
	}
	res, err = http.Get("http://" + addr + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/api/tags = %d, want 200", res.StatusCode)
	}

	stop()
	wantCleanExit(t, result, "run")
}

// wantCleanExit waits for result, the end of a run or of a process told to
// stop, and fails the test unless it ends without error within 30s.
func wantCleanExit(t *testing.T, result <-chan error, what string) {
	t.Helper()
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("%s ended with %v after the shutdown signal, want no error", what, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not end within 30s of the shutdown signal", what)
	}
}

func TestRunRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no database", map[string]string{}, "no database configured"},
		{"short JWT secret", map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1/x", "JWT_SECRET": "short"}, "at least 32 bytes"},
		{"bad pool size", map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1/x", "DB_MAX_CONNS": "zero"}, "DB_MAX_CONNS"},
		{"bad port", map[string]string{"DB_HOST": "localhost", "DB_PORT": "huge"}, "DB_PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), testEnv(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestConfigFromParts(t *testing.T) {
	cfg, err := loadConfig(testEnv(map[string]string{
		"DB_HOST": "db.internal", "DB_PORT": "6543", "DB_NAME": "conduit", "DB_USER": "app",
		"DB_PASSWORD": "p@ss w'rd", "DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": "/etc/ssl/rds.pem",
		"DB_MAX_CONNS": "7", "CORS_ORIGINS": "https://a.example, https://b.example",
	}))
	if err != nil {
		t.Fatal(err)
	}
	db := cfg.db
	if db.Host != "db.internal" || db.Port != 6543 || db.Database != "conduit" || db.User != "app" ||
		db.Password != "p@ss w'rd" || db.SSLMode != "verify-full" || db.SSLRootCert != "/etc/ssl/rds.pem" {
		t.Errorf("database config = %+v", db)
	}
	if got, want := cfg.maxConns, 7; got != want {
		t.Errorf("maxConns = %d, want %d", got, want)
	}
	if got, want := cfg.corsOrigins, []string{"https://a.example", "https://b.example"}; !slices.Equal(got, want) {
		t.Errorf("corsOrigins = %q, want %q", got, want)
	}
	if db.ConnectTimeout == 0 || db.Runtime["statement_timeout"] == "" {
		t.Errorf("connect timeout %v and statement timeout %q must be set", db.ConnectTimeout, db.Runtime["statement_timeout"])
	}
}

// TestConfigBinaryParameters checks the one-round-trip mode is on unless a
// DATABASE_URL chooses otherwise.
func TestConfigBinaryParameters(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{"DB_HOST": "db.internal"}, true},
		{map[string]string{"DATABASE_URL": "postgres://app@db.internal/conduit"}, true},
		{map[string]string{"DATABASE_URL": "postgres://app@db.internal/conduit?binary_parameters=no"}, false},
		{map[string]string{"DATABASE_URL": "host=db.internal binary_parameters=no"}, false},
	}
	for _, tt := range tests {
		cfg, err := loadConfig(testEnv(tt.env))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.db.BinaryParameters; got != tt.want {
			t.Errorf("loadConfig(%v).db.BinaryParameters = %v, want %v", tt.env, got, tt.want)
		}
	}
}

func TestConfigKeepsPasswordOutOfErrors(t *testing.T) {
	_, err := loadConfig(testEnv(map[string]string{"DATABASE_URL": "postgres://app:hunter2secret@host:notaport/db"}))
	if err == nil {
		t.Fatal("loadConfig accepted a bad DATABASE_URL")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Fatalf("error %q holds the password", err)
	}
}

func TestSchemaAppliesTwiceAndConcurrently(t *testing.T) {
	t.Parallel()
	name := newEmptyDatabase(t)

	const boots = 10
	var wg sync.WaitGroup
	errs := make(chan error, boots)
	for range boots {
		wg.Go(func() {
			db, err := sql.Open("postgres", databaseURL(name))
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			errs <- applySchema(context.Background(), db)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent applySchema: %v", err)
		}
	}

	db, err := sql.Open("postgres", databaseURL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO users (username, email, password_hash) VALUES ('kept', 'kept@example.com', 'x')`); err != nil {
		t.Fatal(err)
	}
	if err := applySchema(context.Background(), db); err != nil {
		t.Fatalf("second applySchema: %v", err)
	}
	var users int
	if err := db.QueryRow(`SELECT count(*) FROM users`).Scan(&users); err != nil {
		t.Fatal(err)
	}
	if users != 1 {
		t.Fatalf("users after reapplying the schema = %d, want 1", users)
	}
}
