// soak_test.go holds the soak: the real binary under a mixed load of reads
// and writes for a while, with its errors, latencies and memory. It runs
// only when asked:
//
//	go test -run TestSoak -soak 60s -v .
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

var soakFor = flag.Duration("soak", 0, "run TestSoak for this long (e.g. 60s)")

func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("the soak runs only with -soak DURATION")
	}
	const clients = 32
	cmd, addr := startBinary(t, map[string]string{"DATABASE_URL": newTestDatabase(t)})
	base := "http://" + addr
	api := &testAPI{t: t, url: base}

	var users []testUser
	for i := range 8 {
		users = append(users, api.register(fmt.Sprintf("soaker%d", i)))
	}
	var slugs []string
	for i := range 40 {
		slugs = append(slugs, api.createArticle(users[i%len(users)].Token, fmt.Sprintf("Soak %d", i), "soak", fmt.Sprintf("t%d", i%7)).Slug)
	}
	for _, u := range users[1:] {
		api.call("POST", "/api/profiles/"+users[0].Username+"/follow", u.Token, nil).want(http.StatusOK, nil)
	}

	anyUser := func() testUser { return users[rand.IntN(len(users))] }
	anySlug := func() string { return slugs[rand.IntN(len(slugs))] }
	getOp := func(name string, weight int, path func() string, signedIn bool) loadOp {
		return loadOp{name, weight, func(ctx context.Context, c *http.Client, base string) (int, error) {
			token := ""
			if signedIn {
				token = anyUser().Token
			}
			return loadSend(ctx, c, "GET", base+path(), token, nil)
		}}
	}
	ops := []loadOp{
		getOp("list articles", 200, func() string { return "/api/articles" }, false),
		getOp("list articles signed in", 150, func() string { return "/api/articles?limit=10" }, true),
		getOp("articles by tag", 80, func() string { return "/api/articles?tag=t" + strconv.Itoa(rand.IntN(7)) }, true),
		getOp("feed", 80, func() string { return "/api/articles/feed" }, true),
		getOp("get article", 150, func() string { return "/api/articles/" + anySlug() }, true),
		getOp("list comments", 80, func() string { return "/api/articles/" + anySlug() + "/comments" }, false),
		getOp("get profile", 50, func() string { return "/api/profiles/" + anyUser().Username }, true),
		getOp("tags", 50, func() string { return "/api/tags" }, false),
		{"create article", 30, func(ctx context.Context, c *http.Client, base string) (int, error) {
			body := fmt.Sprintf(`{"article":{"title":"Load %d","description":"d","body":"%s","tagList":["soak"]}}`, rand.Int(), strings.Repeat("text ", 200))
			return loadSend(ctx, c, "POST", base+"/api/articles", anyUser().Token, []byte(body))
		}},
		{"add comment", 50, func(ctx context.Context, c *http.Client, base string) (int, error) {
			return loadSend(ctx, c, "POST", base+"/api/articles/"+anySlug()+"/comments", anyUser().Token, []byte(`{"comment":{"body":"soaking"}}`))
		}},
		{"favorite", 40, func(ctx context.Context, c *http.Client, base string) (int, error) {
			method := "POST"
			if rand.IntN(2) == 0 {
				method = "DELETE"
			}
			return loadSend(ctx, c, method, base+"/api/articles/"+anySlug()+"/favorite", anyUser().Token, nil)
		}},
		// Users log in rarely: about 1 request in 1,000, as a site's own
		// traffic would have it, not a flood (the flood has its own test).
		{"login", 1, func(ctx context.Context, c *http.Client, base string) (int, error) {
			u := anyUser()
			body := fmt.Sprintf(`{"user":{"email":%q,"password":%q}}`, u.Email, testPassword)
			return loadSend(ctx, c, "POST", base+"/api/users/login", "", []byte(body))
		}},
	}

	// Memory after a short warm-up, then every few seconds until the end.
	warmUp := min(*soakFor/6, 10*time.Second)
	runLoad(context.Background(), base, ops, clients, warmUp)
	startRSS := residentKiB(t, cmd.Process.Pid)
	rss := []int{startRSS}
	done := make(chan loadReport)
	go func() { done <- runLoad(context.Background(), base, ops, clients, *soakFor) }()
	var report loadReport
	for sampling := true; sampling; {
		select {
		case report = <-done:
			sampling = false
		case <-time.After(5 * time.Second):
			rss = append(rss, residentKiB(t, cmd.Process.Pid))
		}
	}
	endRSS := residentKiB(t, cmd.Process.Pid)

	total := report.Total()
	t.Logf("soak: %d clients for %v after a %v warm-up\n%s", clients, report.Elapsed.Round(time.Second), warmUp, report)
	t.Logf("resident memory: %d KiB after warm-up, %d KiB at the end; samples every 5s: %v KiB", startRSS, endRSS, rss)
	for status, n := range total.Statuses {
		if status == 0 || status >= 500 {
			t.Errorf("%d requests answered with status %d (0: no answer); samples: %q", n, status, total.Samples)
		}
	}
	// Flat after warm-up: a leak grows steadily over a minute; noise and the
	// heap's own growth stay within half again.
	if endRSS > startRSS*3/2 {
		t.Errorf("resident memory grew from %d KiB to %d KiB", startRSS, endRSS)
	}
}

// residentKiB reads a process's resident set size from /proc.
func residentKiB(t *testing.T, pid int) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kib
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}
