// Command conduit serves the RealWorld "Conduit" API from PostgreSQL.
//
// main.go holds the configuration, start-up and the server's lifecycle;
// handlers.go the HTTP side; db.go the SQL.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "conduit:", err)
		os.Exit(1)
	}
}

// config is everything the service reads from its environment.
type config struct {
	addr          string
	db            pq.Config
	maxConns      int
	jwtKey        []byte
	jwtKeyRandom  bool
	corsOrigins   []string
	proxyHops     int
	authPerMinute int
	connectWait   time.Duration
	shutdownWait  time.Duration
}

const minJWTSecret = 32

func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		addr:         ":" + cmp.Or(getenv("PORT"), "8080"),
		connectWait:  60 * time.Second,
		shutdownWait: 25 * time.Second,
	}
	var err error
	if c.db, err = databaseConfig(getenv); err != nil {
		return config{}, err
	}
	ints := []struct {
		name  string
		into  *int
		value int
		min   int
	}{
		{"DB_MAX_CONNS", &c.maxConns, 10, 1},
		{"TRUSTED_PROXY_HOPS", &c.proxyHops, 0, 0},
		{"AUTH_RATE_PER_MINUTE", &c.authPerMinute, 20, 1},
	}
	for _, v := range ints {
		*v.into = v.value
		if s := getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < v.min {
				return config{}, fmt.Errorf("%s=%q: want an integer of at least %d", v.name, s, v.min)
			}
			*v.into = n
		}
	}
	if secret := getenv("JWT_SECRET"); secret != "" {
		if len(secret) < minJWTSecret {
			return config{}, fmt.Errorf("JWT_SECRET is %d bytes long: it must be at least %d bytes", len(secret), minJWTSecret)
		}
		c.jwtKey = []byte(secret)
	} else {
		c.jwtKey = make([]byte, 32)
		rand.Read(c.jwtKey)
		c.jwtKeyRandom = true
	}
	for _, o := range strings.Split(cmp.Or(getenv("CORS_ORIGINS"), "*"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.corsOrigins = append(c.corsOrigins, o)
		}
	}
	return c, nil
}

// databaseConfig reads DATABASE_URL or, when it is unset, the DB_* parts the
// deploy stack sets, and adds the timeouts every connection must have.
func databaseConfig(getenv func(string) string) (pq.Config, error) {
	var cfg pq.Config
	var err error
	if url := getenv("DATABASE_URL"); url != "" {
		if cfg, err = pq.NewConfig(url); err != nil {
			return pq.Config{}, fmt.Errorf("DATABASE_URL: %w", redactedError(err, url))
		}
	} else {
		if getenv("DB_HOST") == "" {
			return pq.Config{}, errors.New("no database configured: set DATABASE_URL, or DB_HOST with DB_NAME, DB_USER and DB_PASSWORD")
		}
		if cfg, err = pq.NewConfig(""); err != nil {
			return pq.Config{}, err
		}
		cfg.Host = getenv("DB_HOST")
		if p := getenv("DB_PORT"); p != "" {
			port, err := strconv.ParseUint(p, 10, 16)
			if err != nil {
				return pq.Config{}, fmt.Errorf("DB_PORT=%q: want a port number", p)
			}
			cfg.Port = uint16(port)
		}
		cfg.Database = cmp.Or(getenv("DB_NAME"), cfg.Database)
		cfg.User = cmp.Or(getenv("DB_USER"), cfg.User)
		cfg.Password = cmp.Or(getenv("DB_PASSWORD"), cfg.Password)
		cfg.SSLMode = pq.SSLMode(cmp.Or(getenv("DB_SSLMODE"), string(cfg.SSLMode)))
		cfg.SSLRootCert = cmp.Or(getenv("DB_SSLROOTCERT"), cfg.SSLRootCert)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.Runtime == nil {
		cfg.Runtime = map[string]string{}
	}
	// A runaway statement must not hold a connection for long, and neither
	// must a transaction whose client stopped talking.
	setDefault(cfg.Runtime, "statement_timeout", cmp.Or(getenv("DB_STATEMENT_TIMEOUT"), "5s"))
	setDefault(cfg.Runtime, "idle_in_transaction_session_timeout", "10s")
	cfg.ApplicationName = cmp.Or(cfg.ApplicationName, "conduit")
	// One round trip per statement: by default lib/pq waits for a statement's
	// description before it sends the parameters; binary_parameters sends
	// them in the same packet (only []byte parameters, which the service has
	// none of, change encoding). Measured with make bench on loopback: an
	// article read from one client 0.41 -> 0.32 ms at p50, and more per
	// network hop. A DATABASE_URL that sets binary_parameters keeps its choice.
	if !strings.Contains(getenv("DATABASE_URL"), "binary_parameters") {
		cfg.BinaryParameters = true
	}
	return cfg, nil
}

func setDefault(m map[string]string, key, value string) {
	if _, ok := m[key]; !ok {
		m[key] = value
	}
}

// redactedError keeps a connection string's secrets out of an error that
// may quote it.
func redactedError(err error, dsn string) error {
	msg := err.Error()
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			msg = strings.ReplaceAll(msg, dsn[i+3:at], "REDACTED")
		}
	}
	return errors.New(msg)
}

// run starts the service and serves until ctx is done, then shuts down
// gracefully. It logs to stdout; the address it listens on is in the
// "listening" line.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	log := slog.New(slog.NewJSONHandler(stdout, nil))
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if cfg.jwtKeyRandom {
		log.Warn("JWT_SECRET is not set: using a random key, so tokens will not survive a restart")
	}

	db, err := openDB(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()

	listener, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           newServer(db, log, cfg).routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(listener) }()
	log.Info("listening", "addr", listener.Addr().String())

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownWait)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

func newServer(db *sql.DB, log *slog.Logger, cfg config) *server {
	return &server{
		db:          database{db},
		log:         log,
		now:         time.Now,
		jwtKey:      cfg.jwtKey,
		corsOrigins: cfg.corsOrigins,
		hashSlots:   make(chan struct{}, hashingSlots()),
		hashWait:    2 * time.Second,
		// Under WriteTimeout, so the answer still reaches the client.
		requestTimeout: 10 * time.Second,
		limiter:        newRateLimiter(cfg.authPerMinute, cfg.proxyHops, time.Now),
	}
}

// hashingSlots is how many password hashes may run at once: one per CPU the
// process may use, less one kept for every other request. With every CPU
// hashing, a login flood held reads for 100-150 ms (p99) instead of ~5 ms.
func hashingSlots() int {
	return max(1, runtime.GOMAXPROCS(0)-1)
}

// openDB connects, retrying with backoff for a bounded time since a fresh
// database may not accept connections yet, and applies the schema.
func openDB(ctx context.Context, cfg config, log *slog.Logger) (*sql.DB, error) {
	connector, err := pq.NewConnectorConfig(cfg.db)
	if err != nil {
		return nil, fmt.Errorf("database configuration: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(cfg.maxConns)
	db.SetMaxIdleConns(cfg.maxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(30 * time.Minute)

	log.Info("connecting to the database", "host", cfg.db.Host, "port", cfg.db.Port,
		"dbname", cfg.db.Database, "user", cfg.db.User, "sslmode", cfg.db.SSLMode, "max_conns", cfg.maxConns)
	deadline := time.Now().Add(cfg.connectWait)
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err = applySchema(ctx, db)
		if err == nil {
			return db, nil
		}
		if !isUnavailable(err) || time.Now().Add(wait).After(deadline) {
			db.Close()
			return nil, fmt.Errorf("database: %w", err)
		}
		log.Warn("database not ready, retrying", "error", err.Error(), "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			db.Close()
			return nil, ctx.Err()
		}
	}
}
