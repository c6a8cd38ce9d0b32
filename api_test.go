// api_test.go tests every endpoint of the API over HTTP against a real
// PostgreSQL: success, each error path, filters, pagination and the
// concurrency cases.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)

	res := api.call("POST", "/api/users", "", map[string]any{"user": map[string]any{
		"username": "Alice", "email": "Alice@Example.com", "password": testPassword,
	}})
	var got struct{ User testUser }
	res.want(http.StatusCreated, &got)
	if got.User.Username != "Alice" || got.User.Email != "Alice@Example.com" || got.User.Token == "" {
		t.Fatalf("registered user = %+v", got.User)
	}
	if strings.Contains(string(res.body), "pbkdf2") || strings.Contains(string(res.body), testPassword) {
		t.Fatalf("response holds the password or its hash: %s", res.body)
	}
	api.call("GET", "/api/user", got.User.Token, nil).want(http.StatusOK, nil)
	api.call("POST", "/api/users", "", `{"user":{"username":"Zoë_O.Neil-2","email":"zoe@example.com","password":"password123"}}`).want(http.StatusCreated, nil)
	api.call("GET", "/api/profiles/Zoë_O.Neil-2", "", nil).want(http.StatusOK, nil)

	tests := []struct {
		name   string
		body   any
		status int
		want   string
	}{
		{"username taken in another case", `{"user":{"username":"ALICE","email":"other@example.com","password":"password123"}}`, 422, "username has already been taken"},
		{"email taken in another case", `{"user":{"username":"other","email":"alice@EXAMPLE.com","password":"password123"}}`, 422, "email has already been taken"},
		{"missing username", `{"user":{"email":"x@example.com","password":"password123"}}`, 422, "username can't be blank"},
		{"blank username", `{"user":{"username":"  ","email":"x@example.com","password":"password123"}}`, 422, "username can't be blank"},
		{"missing email", `{"user":{"username":"x","password":"password123"}}`, 422, "email can't be blank"},
		{"invalid email", `{"user":{"username":"x","email":"not-an-email","password":"password123"}}`, 422, "email is invalid"},
		{"missing password", `{"user":{"username":"x","email":"x@example.com"}}`, 422, "password can't be blank"},
		{"short password", `{"user":{"username":"x","email":"x@example.com","password":"short"}}`, 422, "password is too short"},
		{"username with a slash", `{"user":{"username":"a/b","email":"x@example.com","password":"password123"}}`, 422, "only letters, digits"},
		{"username with URL characters", `{"user":{"username":"a?b #c","email":"x@example.com","password":"password123"}}`, 422, "only letters, digits"},
		{"no user object", `{"username":"x"}`, 422, "user is required"},
		{"empty body", ``, 422, "body must not be empty"},
		{"malformed JSON", `{"user":`, 422, "not valid JSON"},
		{"syntax error", `{"user":{]`, 422, "not valid JSON"},
		{"wrong type", `{"user":{"username":42}}`, 422, "user.username must be of type string"},
		{"not an object", `[1,2]`, 422, "JSON object"},
		{"trailing data", `{"user":{"username":"x","email":"x@example.com","password":"password123"}} {}`, 422, "single JSON value"},
		{"trailing garbage", `{"user":{"username":"x","email":"x@example.com","password":"password123"}} xyz`, 422, "single JSON value"},
		{"body over 1 MiB", `{"user":{"username":"` + strings.Repeat("a", 1<<20) + `"}}`, 413, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api.call("POST", "/api/users", "", tt.body).wantError(tt.status, tt.want)
		})
	}

	var users int
	if err := api.db.QueryRow(`SELECT count(*) FROM users`).Scan(&users); err != nil {
		t.Fatal(err)
	}
	if users != 2 {
		t.Fatalf("users stored = %d, want 2: a refused registration stored something", users)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	api.register("bob")

	login := func(email, password string) *testResponse {
		return api.call("POST", "/api/users/login", "", map[string]any{"user": map[string]any{"email": email, "password": password}})
	}
	var got struct{ User testUser }
	login("BOB@example.com", testPassword).want(http.StatusOK, &got)
	if got.User.Username != "bob" || got.User.Token == "" {
		t.Fatalf("logged in user = %+v", got.User)
	}
	api.call("GET", "/api/user", got.User.Token, nil).want(http.StatusOK, nil)

	wrongPassword := login("bob@example.com", "wrong password")
	wrongPassword.wantError(http.StatusUnauthorized, "email or password is invalid")
	unknownEmail := login("nobody@example.com", testPassword)
	unknownEmail.wantError(http.StatusUnauthorized, "email or password is invalid")
	if string(wrongPassword.body) != string(unknownEmail.body) {
		t.Errorf("a wrong password answers %s but an unknown email %s: they must not differ", wrongPassword.body, unknownEmail.body)
	}
	login("", testPassword).wantError(http.StatusUnprocessableEntity, "email can't be blank")
	login("bob@example.com", "").wantError(http.StatusUnprocessableEntity, "password can't be blank")
	api.call("POST", "/api/users/login", "", `{"user":"bob"}`).wantError(http.StatusUnprocessableEntity, "must be of type object")
}

func TestCurrentUser(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	carol := api.register("carol")

	var got struct{ User testUser }
	api.call("GET", "/api/user", carol.Token, nil).want(http.StatusOK, &got)
	if got.User != carol {
		t.Fatalf("GET /api/user = %+v, want %+v", got.User, carol)
	}

	req, _ := http.NewRequest("GET", api.url+"/api/user", nil)
	req.Header.Set("Authorization", "Bearer "+carol.Token)
	api.do(req).want(http.StatusOK, nil)

	api.call("GET", "/api/user", "", nil).wantError(http.StatusUnauthorized, "token")
	api.call("GET", "/api/user", "garbage", nil).wantError(http.StatusUnauthorized, "token")
	req, _ = http.NewRequest("GET", api.url+"/api/user", nil)
	req.Header.Set("Authorization", "Basic "+carol.Token)
	api.do(req).wantError(http.StatusUnauthorized, "token")
}

func TestUpdateUser(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	dave := api.register("dave")
	api.register("erin")

	var got struct{ User testUser }
	api.call("PUT", "/api/user", dave.Token, map[string]any{"user": map[string]any{
		"bio": "I write Go", "image": "https://example.com/dave.png",
	}}).want(http.StatusOK, &got)
	if got.User.Bio != "I write Go" || got.User.Image != "https://example.com/dave.png" || got.User.Username != "dave" {
		t.Fatalf("updated user = %+v", got.User)
	}

	api.call("PUT", "/api/user", dave.Token, map[string]any{"user": map[string]any{
		"username": "david", "email": "david@example.com", "password": "a new password",
	}}).want(http.StatusOK, &got)
	if got.User.Username != "david" || got.User.Email != "david@example.com" || got.User.Bio != "I write Go" {
		t.Fatalf("updated user = %+v", got.User)
	}
	api.call("POST", "/api/users/login", "", map[string]any{"user": map[string]any{"email": "david@example.com", "password": "a new password"}}).want(http.StatusOK, nil)
	api.call("POST", "/api/users/login", "", map[string]any{"user": map[string]any{"email": "david@example.com", "password": testPassword}}).want(http.StatusUnauthorized, nil)

	// Clearing the bio is allowed; a blank username or email is not.
	api.call("PUT", "/api/user", dave.Token, `{"user":{"bio":""}}`).want(http.StatusOK, &got)
	if got.User.Bio != "" {
		t.Fatalf("bio = %q, want it cleared", got.User.Bio)
	}
	tests := []struct {
		name   string
		token  string
		body   any
		status int
		want   string
	}{
		{"username taken", dave.Token, `{"user":{"username":"Erin"}}`, 422, "username has already been taken"},
		{"email taken", dave.Token, `{"user":{"email":"ERIN@example.com"}}`, 422, "email has already been taken"},
		{"blank username", dave.Token, `{"user":{"username":""}}`, 422, "username can't be blank"},
		{"blank email", dave.Token, `{"user":{"email":""}}`, 422, "email can't be blank"},
		{"short password", dave.Token, `{"user":{"password":"x"}}`, 422, "password is too short"},
		{"no user object", dave.Token, `{}`, 422, "user is required"},
		{"no token", "", `{"user":{"bio":"x"}}`, 401, "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api.call("PUT", "/api/user", tt.token, tt.body).wantError(tt.status, tt.want)
		})
	}
	api.call("GET", "/api/user", dave.Token, nil).want(http.StatusOK, &got)
	if got.User.Username != "david" || got.User.Email != "david@example.com" {
		t.Fatalf("a refused update changed the user: %+v", got.User)
	}
}

func TestProfiles(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	frank := api.register("frank")
	grace := api.register("grace")

	profile := func(token, name string) testProfile {
		t.Helper()
		var res struct{ Profile testProfile }
		api.call("GET", "/api/profiles/"+name, token, nil).want(http.StatusOK, &res)
		return res.Profile
	}
	if p := profile("", "grace"); p.Username != "grace" || p.Following {
		t.Fatalf("anonymous view of grace = %+v", p)
	}
	if p := profile(frank.Token, "GRACE"); p.Username != "grace" || p.Following {
		t.Fatalf("frank's view of grace before following = %+v", p)
	}

	for range 2 { // following twice is the same as once
		var res struct{ Profile testProfile }
		api.call("POST", "/api/profiles/grace/follow", frank.Token, nil).want(http.StatusOK, &res)
		if !res.Profile.Following || res.Profile.Username != "grace" {
			t.Fatalf("follow answered %+v", res.Profile)
		}
	}
	if p := profile(frank.Token, "grace"); !p.Following {
		t.Fatal("frank does not follow grace after following her")
	}
	if p := profile(grace.Token, "frank"); p.Following {
		t.Fatal("following is not one-way")
	}
	var follows int
	api.db.QueryRow(`SELECT count(*) FROM follows`).Scan(&follows)
	if follows != 1 {
		t.Fatalf("follows stored = %d, want 1", follows)
	}

	for range 2 {
		var res struct{ Profile testProfile }
		api.call("DELETE", "/api/profiles/grace/follow", frank.Token, nil).want(http.StatusOK, &res)
		if res.Profile.Following {
			t.Fatalf("unfollow answered %+v", res.Profile)
		}
	}
	if p := profile(frank.Token, "grace"); p.Following {
		t.Fatal("frank still follows grace after unfollowing")
	}

	api.call("GET", "/api/profiles/nobody", "", nil).wantError(http.StatusNotFound, "profile not found")
	api.call("POST", "/api/profiles/nobody/follow", frank.Token, nil).wantError(http.StatusNotFound, "profile not found")
	api.call("DELETE", "/api/profiles/nobody/follow", frank.Token, nil).wantError(http.StatusNotFound, "profile not found")
	api.call("POST", "/api/profiles/frank/follow", frank.Token, nil).wantError(http.StatusUnprocessableEntity, "cannot follow yourself")
	api.call("POST", "/api/profiles/grace/follow", "", nil).wantError(http.StatusUnauthorized, "token")
	api.call("DELETE", "/api/profiles/grace/follow", "", nil).wantError(http.StatusUnauthorized, "token")
	api.call("GET", "/api/profiles/grace", "not-a-token", nil).wantError(http.StatusUnauthorized, "token")
}

var isoTimestamp = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func TestArticleLifecycle(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	hana := api.register("hana")
	ivan := api.register("ivan")

	a := api.createArticle(hana.Token, "How to Train Your Dragon", "training", "dragons", "dragons", " ")
	if a.Slug != "how-to-train-your-dragon" {
		t.Errorf("slug = %q, want how-to-train-your-dragon", a.Slug)
	}
	if !slices.Equal(a.TagList, []string{"dragons", "training"}) {
		t.Errorf("tagList = %q, want sorted, trimmed and without repeats", a.TagList)
	}
	if a.Body == nil || *a.Body != "The body of How to Train Your Dragon" || a.Author.Username != "hana" || a.Favorited || a.FavoritesCount != 0 {
		t.Errorf("created article = %+v", a)
	}
	if !isoTimestamp.MatchString(a.CreatedAt) || !isoTimestamp.MatchString(a.UpdatedAt) {
		t.Errorf("timestamps %q, %q are not ISO 8601 with milliseconds", a.CreatedAt, a.UpdatedAt)
	}

	if got := api.article("", a.Slug); got.Title != a.Title || got.Body == nil || got.Author.Following {
		t.Errorf("anonymous GET = %+v", got)
	}
	api.call("GET", "/api/articles/no-such-article", "", nil).wantError(http.StatusNotFound, "article not found")

	// Only the author may change or delete it, and a refusal changes nothing.
	api.call("PUT", "/api/articles/"+a.Slug, ivan.Token, `{"article":{"body":"hijacked"}}`).wantError(http.StatusForbidden, "author")
	api.call("DELETE", "/api/articles/"+a.Slug, ivan.Token, nil).wantError(http.StatusForbidden, "author")
	if got := api.article("", a.Slug); *got.Body != *a.Body {
		t.Fatalf("body after a refused update = %q", *got.Body)
	}

	// Updating the body keeps the slug; updating the title moves it.
	var res struct{ Article testArticle }
	api.call("PUT", "/api/articles/"+a.Slug, hana.Token, `{"article":{"body":"With two hands"}}`).want(http.StatusOK, &res)
	if res.Article.Slug != a.Slug || *res.Article.Body != "With two hands" || res.Article.Title != a.Title {
		t.Fatalf("after a body update: %+v", res.Article)
	}
	api.call("PUT", "/api/articles/"+a.Slug, hana.Token, `{"article":{"title":"Dragons, Revisited","tagList":["revisited"]}}`).want(http.StatusOK, &res)
	if res.Article.Slug != "dragons-revisited" || res.Article.Title != "Dragons, Revisited" || !slices.Equal(res.Article.TagList, []string{"revisited"}) {
		t.Fatalf("after a title update: %+v", res.Article)
	}
	api.call("GET", "/api/articles/"+a.Slug, "", nil).want(http.StatusNotFound, nil)
	slug := res.Article.Slug

	updateErrors := []struct {
		name   string
		slug   string
		token  string
		body   string
		status int
		want   string
	}{
		{"blank title", slug, hana.Token, `{"article":{"title":" "}}`, 422, "title can't be blank"},
		{"blank body", slug, hana.Token, `{"article":{"body":""}}`, 422, "body can't be blank"},
		{"no article object", slug, hana.Token, `{"title":"x"}`, 422, "article is required"},
		{"unknown article", "nope", hana.Token, `{"article":{"body":"x"}}`, 404, "article not found"},
		{"no token", slug, "", `{"article":{"body":"x"}}`, 401, "token"},
	}
	for _, tt := range updateErrors {
		t.Run("update/"+tt.name, func(t *testing.T) {
			api.call("PUT", "/api/articles/"+tt.slug, tt.token, tt.body).wantError(tt.status, tt.want)
		})
	}

	createErrors := []struct {
		name   string
		token  string
		body   string
		status int
		want   string
	}{
		{"missing title", hana.Token, `{"article":{"description":"d","body":"b"}}`, 422, "title can't be blank"},
		{"missing description", hana.Token, `{"article":{"title":"t","body":"b"}}`, 422, "description can't be blank"},
		{"missing body", hana.Token, `{"article":{"title":"t","description":"d"}}`, 422, "body can't be blank"},
		{"tags not strings", hana.Token, `{"article":{"title":"t","description":"d","body":"b","tagList":[1]}}`, 422, "must be of type string"},
		{"too many tags", hana.Token, `{"article":{"title":"t","description":"d","body":"b","tagList":[` + strings.TrimSuffix(strings.Repeat(`"t",`, 0)+manyTags(21), ",") + `]}}`, 422, "at most 20 tags"},
		{"title too long", hana.Token, `{"article":{"title":"` + strings.Repeat("t", 257) + `","description":"d","body":"b"}}`, 422, "title is too long"},
		{"no token", "", `{"article":{"title":"t","description":"d","body":"b"}}`, 401, "token"},
	}
	for _, tt := range createErrors {
		t.Run("create/"+tt.name, func(t *testing.T) {
			api.call("POST", "/api/articles", tt.token, tt.body).wantError(tt.status, tt.want)
		})
	}

	api.call("DELETE", "/api/articles/"+slug, "", nil).wantError(http.StatusUnauthorized, "token")
	api.call("DELETE", "/api/articles/"+slug, hana.Token, nil).want(http.StatusNoContent, nil)
	api.call("GET", "/api/articles/"+slug, "", nil).wantError(http.StatusNotFound, "article not found")
	api.call("DELETE", "/api/articles/"+slug, hana.Token, nil).wantError(http.StatusNotFound, "article not found")
}

func manyTags(n int) string {
	var tags []string
	for i := range n {
		tags = append(tags, fmt.Sprintf(`"tag%d"`, i))
	}
	return strings.Join(tags, ",")
}

func TestSlugs(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	jo := api.register("jo")

	first := api.createArticle(jo.Token, "Same Title")
	second := api.createArticle(jo.Token, "Same Title")
	if first.Slug != "same-title" || second.Slug == first.Slug || !strings.HasPrefix(second.Slug, "same-title-") {
		t.Errorf("slugs for a repeated title: %q then %q", first.Slug, second.Slug)
	}
	if got := api.article("", second.Slug); got.Title != "Same Title" {
		t.Errorf("GET by the suffixed slug = %+v", got)
	}

	tests := []struct{ title, want string }{
		{"Привет, мир", "привет-мир"},
		{"Ça va? Très bien!", "ça-va-très-bien"},
		{"日本語のタイトル", "日本語のタイトル"},
		{"!!! ???", "article"},
		{"  Go 1.26: what's new  ", "go-1-26-what-s-new"},
	}
	for _, tt := range tests {
		a := api.createArticle(jo.Token, tt.title)
		if a.Slug != tt.want {
			t.Errorf("slug of %q = %q, want %q", tt.title, a.Slug, tt.want)
		}
		if got := api.article("", a.Slug); got.Title != strings.TrimSpace(tt.title) {
			t.Errorf("GET %q = %+v", a.Slug, got)
		}
	}

	// Re-saving a suffixed article under its own title keeps its slug.
	var res struct{ Article testArticle }
	api.call("PUT", "/api/articles/"+second.Slug, jo.Token, `{"article":{"title":"Same Title"}}`).want(http.StatusOK, &res)
	if res.Article.Slug != second.Slug {
		t.Errorf("slug after re-saving the same title = %q, want %q", res.Article.Slug, second.Slug)
	}
}

func TestArticleLists(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	kim := api.register("kim")
	lee := api.register("lee")
	max := api.register("max")

	// Created oldest first: kim writes 3 (tagged go), lee writes 2 (tagged sql).
	k1 := api.createArticle(kim.Token, "K1", "go")
	k2 := api.createArticle(kim.Token, "K2", "go", "web")
	l1 := api.createArticle(lee.Token, "L1", "sql")
	k3 := api.createArticle(kim.Token, "K3", "go")
	l2 := api.createArticle(lee.Token, "L2", "sql", "web")
	api.call("POST", "/api/articles/"+k1.Slug+"/favorite", max.Token, nil).want(http.StatusOK, nil)
	api.call("POST", "/api/articles/"+l2.Slug+"/favorite", max.Token, nil).want(http.StatusOK, nil)
	api.call("POST", "/api/profiles/lee/follow", max.Token, nil).want(http.StatusOK, nil)

	slugs := func(list testArticles) []string {
		var s []string
		for _, a := range list.Articles {
			s = append(s, a.Slug)
		}
		return s
	}
	tests := []struct {
		name  string
		token string
		query string
		want  []string
		count int
	}{
		{"all, newest first", "", "", []string{l2.Slug, k3.Slug, l1.Slug, k2.Slug, k1.Slug}, 5},
		{"by tag", "", "?tag=go", []string{k3.Slug, k2.Slug, k1.Slug}, 3},
		{"by other tag", "", "?tag=web", []string{l2.Slug, k2.Slug}, 2},
		{"by unknown tag", "", "?tag=rust", nil, 0},
		{"by author", "", "?author=lee", []string{l2.Slug, l1.Slug}, 2},
		{"by author in another case", "", "?author=LEE", []string{l2.Slug, l1.Slug}, 2},
		{"by unknown author", "", "?author=nobody", nil, 0},
		{"favorited by", "", "?favorited=max", []string{l2.Slug, k1.Slug}, 2},
		{"favorited by someone with none", "", "?favorited=kim", nil, 0},
		{"author and tag", "", "?author=kim&tag=web", []string{k2.Slug}, 1},
		{"first page", "", "?limit=2", []string{l2.Slug, k3.Slug}, 5},
		{"second page", "", "?limit=2&offset=2", []string{l1.Slug, k2.Slug}, 5},
		{"last page", "", "?limit=2&offset=4", []string{k1.Slug}, 5},
		{"past the end", "", "?offset=10", nil, 5},
		{"limit above the cap", "", "?limit=1000", []string{l2.Slug, k3.Slug, l1.Slug, k2.Slug, k1.Slug}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list := api.articles(tt.token, tt.query)
			if got := slugs(list); !slices.Equal(got, tt.want) {
				t.Errorf("articles%s = %q, want %q", tt.query, got, tt.want)
			}
			if list.ArticlesCount != tt.count {
				t.Errorf("articlesCount = %d, want %d", list.ArticlesCount, tt.count)
			}
			if list.Articles == nil {
				t.Error("articles is null, want a list")
			}
			for _, a := range list.Articles {
				if a.Body != nil {
					t.Errorf("list item %s has a body; the spec's list items have none", a.Slug)
				}
			}
		})
	}

	// The viewer's flags: max favorited l2 and follows lee.
	list := api.articles(max.Token, "?author=lee")
	if len(list.Articles) != 2 || !list.Articles[0].Favorited || list.Articles[1].Favorited ||
		!list.Articles[0].Author.Following || list.Articles[0].FavoritesCount != 1 {
		t.Errorf("max's view of lee's articles = %+v", list.Articles)
	}
	if anon := api.articles("", "?author=lee"); anon.Articles[0].Favorited || anon.Articles[0].Author.Following {
		t.Errorf("anonymous view carries a viewer's flags: %+v", anon.Articles[0])
	}

	for _, query := range []string{"?limit=0", "?limit=-1", "?limit=abc", "?offset=-1", "?offset=x", "?limit=1.5"} {
		api.call("GET", "/api/articles"+query, "", nil).wantError(http.StatusUnprocessableEntity, "must be")
	}
	api.call("GET", "/api/articles", "expired.or.bad", nil).wantError(http.StatusUnauthorized, "token")

	// The feed holds the followed authors' articles only.
	var feed testArticles
	api.call("GET", "/api/articles/feed", max.Token, nil).want(http.StatusOK, &feed)
	if got, want := slugs(feed), []string{l2.Slug, l1.Slug}; !slices.Equal(got, want) || feed.ArticlesCount != 2 {
		t.Errorf("feed = %q (count %d), want %q", got, feed.ArticlesCount, want)
	}
	api.call("GET", "/api/articles/feed?limit=1&offset=1", max.Token, nil).want(http.StatusOK, &feed)
	if got, want := slugs(feed), []string{l1.Slug}; !slices.Equal(got, want) || feed.ArticlesCount != 2 {
		t.Errorf("feed page 2 = %q (count %d), want %q", got, feed.ArticlesCount, want)
	}
	api.call("GET", "/api/articles/feed", kim.Token, nil).want(http.StatusOK, &feed)
	if len(feed.Articles) != 0 || feed.ArticlesCount != 0 || feed.Articles == nil {
		t.Errorf("feed of someone who follows nobody = %+v", feed)
	}
	api.call("GET", "/api/articles/feed", "", nil).wantError(http.StatusUnauthorized, "token")
	api.call("GET", "/api/articles/feed?limit=x", max.Token, nil).wantError(http.StatusUnprocessableEntity, "limit")
}

func TestFavorites(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	nia := api.register("nia")
	omar := api.register("omar")
	a := api.createArticle(nia.Token, "Favorite me")

	var res struct{ Article testArticle }
	for range 2 { // favoriting twice counts once
		api.call("POST", "/api/articles/"+a.Slug+"/favorite", omar.Token, nil).want(http.StatusOK, &res)
		if !res.Article.Favorited || res.Article.FavoritesCount != 1 {
			t.Fatalf("after favoriting: favorited %v, count %d", res.Article.Favorited, res.Article.FavoritesCount)
		}
	}
	api.call("POST", "/api/articles/"+a.Slug+"/favorite", nia.Token, nil).want(http.StatusOK, &res)
	if res.Article.FavoritesCount != 2 {
		t.Fatalf("count after a second user = %d, want 2", res.Article.FavoritesCount)
	}
	if got := api.article("", a.Slug); got.Favorited || got.FavoritesCount != 2 {
		t.Fatalf("anonymous view: favorited %v, count %d", got.Favorited, got.FavoritesCount)
	}
	for range 2 {
		api.call("DELETE", "/api/articles/"+a.Slug+"/favorite", omar.Token, nil).want(http.StatusOK, &res)
		if res.Article.Favorited || res.Article.FavoritesCount != 1 {
			t.Fatalf("after unfavoriting: favorited %v, count %d", res.Article.Favorited, res.Article.FavoritesCount)
		}
	}
	api.call("POST", "/api/articles/nope/favorite", omar.Token, nil).wantError(http.StatusNotFound, "article not found")
	api.call("DELETE", "/api/articles/nope/favorite", omar.Token, nil).wantError(http.StatusNotFound, "article not found")
	api.call("POST", "/api/articles/"+a.Slug+"/favorite", "", nil).wantError(http.StatusUnauthorized, "token")
	api.call("DELETE", "/api/articles/"+a.Slug+"/favorite", "", nil).wantError(http.StatusUnauthorized, "token")
}

// TestFavoritesCountUnderConcurrency has many users favorite and unfavorite
// one article at once: the count must match the stored favorites exactly.
func TestFavoritesCountUnderConcurrency(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	author := api.register("author")
	a := api.createArticle(author.Token, "Popular")

	const clients = 20
	users := make([]testUser, clients)
	for i := range users {
		users[i] = api.seedUser(fmt.Sprintf("fan%d", i))
	}
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() {
			// Everyone favorites twice; the even ones then unfavorite.
			for range 2 {
				api.call("POST", "/api/articles/"+a.Slug+"/favorite", u.Token, nil).want(http.StatusOK, nil)
			}
			if i%2 == 0 {
				api.call("DELETE", "/api/articles/"+a.Slug+"/favorite", u.Token, nil).want(http.StatusOK, nil)
			}
		})
	}
	wg.Wait()

	if got, want := api.article("", a.Slug).FavoritesCount, clients/2; got != want {
		t.Fatalf("favoritesCount = %d, want %d", got, want)
	}
	var stored int
	api.db.QueryRow(`SELECT count(*) FROM favorites`).Scan(&stored)
	if stored != clients/2 {
		t.Fatalf("favorites stored = %d, want %d", stored, clients/2)
	}
}

func TestComments(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	pia := api.register("pia")
	quinn := api.register("quinn")
	a := api.createArticle(pia.Token, "Discuss")
	other := api.createArticle(pia.Token, "Elsewhere")

	var res struct{ Comment testComment }
	api.call("POST", "/api/articles/"+a.Slug+"/comments", quinn.Token, `{"comment":{"body":"First!"}}`).want(http.StatusOK, &res)
	first := res.Comment
	if first.Body != "First!" || first.Author.Username != "quinn" || first.ID == 0 || !isoTimestamp.MatchString(first.CreatedAt) {
		t.Fatalf("created comment = %+v", first)
	}
	api.call("POST", "/api/articles/"+a.Slug+"/comments", pia.Token, `{"comment":{"body":"Thanks"}}`).want(http.StatusOK, &res)
	second := res.Comment

	api.call("POST", "/api/profiles/quinn/follow", pia.Token, nil).want(http.StatusOK, nil)
	var list struct{ Comments []testComment }
	api.call("GET", "/api/articles/"+a.Slug+"/comments", pia.Token, nil).want(http.StatusOK, &list)
	if len(list.Comments) != 2 || list.Comments[0].ID != first.ID || list.Comments[1].ID != second.ID {
		t.Fatalf("comments = %+v", list.Comments)
	}
	if !list.Comments[0].Author.Following || list.Comments[1].Author.Following {
		t.Errorf("pia follows quinn only: %+v", list.Comments)
	}
	api.call("GET", "/api/articles/"+a.Slug+"/comments", "", nil).want(http.StatusOK, &list)
	if len(list.Comments) != 2 || list.Comments[0].Author.Following {
		t.Errorf("anonymous comments = %+v", list.Comments)
	}
	api.call("GET", "/api/articles/"+other.Slug+"/comments", "", nil).want(http.StatusOK, &list)
	if list.Comments == nil || len(list.Comments) != 0 {
		t.Errorf("comments of an article without any = %+v, want []", list.Comments)
	}

	id := fmt.Sprint(first.ID)
	errorsTests := []struct {
		name, method, path, token, body string
		status                          int
		want                            string
	}{
		{"list, unknown article", "GET", "/api/articles/nope/comments", "", "", 404, "article not found"},
		{"add, unknown article", "POST", "/api/articles/nope/comments", quinn.Token, `{"comment":{"body":"x"}}`, 404, "article not found"},
		{"add, blank body", "POST", "/api/articles/" + a.Slug + "/comments", quinn.Token, `{"comment":{"body":"  "}}`, 422, "body can't be blank"},
		{"add, no comment object", "POST", "/api/articles/" + a.Slug + "/comments", quinn.Token, `{"body":"x"}`, 422, "comment is required"},
		{"add, no token", "POST", "/api/articles/" + a.Slug + "/comments", "", `{"comment":{"body":"x"}}`, 401, "token"},
		{"delete, someone else's", "DELETE", "/api/articles/" + a.Slug + "/comments/" + id, pia.Token, "", 403, "author"},
		{"delete, under another article", "DELETE", "/api/articles/" + other.Slug + "/comments/" + id, quinn.Token, "", 404, "comment not found"},
		{"delete, unknown id", "DELETE", "/api/articles/" + a.Slug + "/comments/999999", quinn.Token, "", 404, "comment not found"},
		{"delete, id not a number", "DELETE", "/api/articles/" + a.Slug + "/comments/abc", quinn.Token, "", 404, "comment not found"},
		{"delete, no token", "DELETE", "/api/articles/" + a.Slug + "/comments/" + id, "", "", 401, "token"},
	}
	for _, tt := range errorsTests {
		t.Run(tt.name, func(t *testing.T) {
			var body any
			if tt.body != "" {
				body = tt.body
			}
			api.call(tt.method, tt.path, tt.token, body).wantError(tt.status, tt.want)
		})
	}

	api.call("DELETE", "/api/articles/"+a.Slug+"/comments/"+id, quinn.Token, nil).want(http.StatusNoContent, nil)
	api.call("GET", "/api/articles/"+a.Slug+"/comments", "", nil).want(http.StatusOK, &list)
	if len(list.Comments) != 1 || list.Comments[0].ID != second.ID {
		t.Fatalf("comments after deleting the first = %+v", list.Comments)
	}

	// Deleting the article takes its comments with it.
	api.call("DELETE", "/api/articles/"+a.Slug, pia.Token, nil).want(http.StatusNoContent, nil)
	var left int
	api.db.QueryRow(`SELECT count(*) FROM comments`).Scan(&left)
	if left != 0 {
		t.Fatalf("comments left after deleting their article = %d", left)
	}
}

func TestTags(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	var res struct{ Tags []string }
	api.call("GET", "/api/tags", "", nil).want(http.StatusOK, &res)
	if res.Tags == nil || len(res.Tags) != 0 {
		t.Fatalf("tags of an empty site = %q, want []", res.Tags)
	}

	rae := api.register("rae")
	api.createArticle(rae.Token, "A", "go", "sql")
	api.createArticle(rae.Token, "B", "go")
	api.createArticle(rae.Token, "C", "go", "web", "sql")
	api.call("GET", "/api/tags", "", nil).want(http.StatusOK, &res)
	if want := []string{"go", "sql", "web"}; !slices.Equal(res.Tags, want) {
		t.Fatalf("tags = %q, want %q (most used first)", res.Tags, want)
	}
}

// TestCountsFollowArticles checks the counts the triggers keep (the tag list
// and the number of all articles and of a tag's) against the articles,
// through creates, tag changes, deletes and concurrent writers, and that
// the first boot with the counts counts the articles already there.
func TestCountsFollowArticles(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	checkCounts := func(when string) {
		t.Helper()
		var wrong int
		err := api.db.QueryRow(`
			SELECT count(*)
			FROM (SELECT tag, count(*) AS articles FROM articles, unnest(tags) AS tag GROUP BY tag) counted
			FULL JOIN (SELECT * FROM tag_counts WHERE articles <> 0) kept USING (tag)
			WHERE counted.articles IS DISTINCT FROM kept.articles`).Scan(&wrong)
		if err != nil || wrong != 0 {
			t.Fatalf("%s: %d tags counted wrong (%v)", when, wrong, err)
		}
		var all, kept int
		api.db.QueryRow(`SELECT count(*), (SELECT articles FROM article_count) FROM articles`).Scan(&all, &kept)
		if all != kept {
			t.Fatalf("%s: article_count = %d, want %d", when, kept, all)
		}
		if got := api.articles("", "").ArticlesCount; got != all {
			t.Fatalf("%s: articlesCount = %d, want %d", when, got, all)
		}
	}
	checkCounts("empty")

	ann := api.register("ann")
	a := api.createArticle(ann.Token, "A", "go", "sql")
	b := api.createArticle(ann.Token, "B", "go")
	api.createArticle(ann.Token, "C")
	checkCounts("after creates")
	api.call("PUT", "/api/articles/"+a.Slug, ann.Token, `{"article":{"tagList":["sql","web"]}}`).want(http.StatusOK, nil)
	api.call("PUT", "/api/articles/"+b.Slug, ann.Token, `{"article":{"title":"B2"}}`).want(http.StatusOK, nil)
	checkCounts("after updates")
	if got := api.articles("", "?tag=go").ArticlesCount; got != 1 {
		t.Fatalf("articlesCount for tag go = %d, want 1", got)
	}
	if got := api.articles("", "?tag=nothing").ArticlesCount; got != 0 {
		t.Fatalf("articlesCount for an unused tag = %d, want 0", got)
	}
	api.call("DELETE", "/api/articles/"+api.article("", "b2").Slug, ann.Token, nil).want(http.StatusNoContent, nil)
	checkCounts("after a delete")
	var res struct{ Tags []string }
	api.call("GET", "/api/tags", "", nil).want(http.StatusOK, &res)
	if want := []string{"sql", "web"}; !slices.Equal(res.Tags, want) {
		t.Fatalf("tags = %q, want %q (go is no longer used)", res.Tags, want)
	}

	// Writers sharing tags, each taking their rows' locks at once.
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			tags := []string{"x", "y", "z", fmt.Sprint("t", i%3)}
			api.createArticle(ann.Token, fmt.Sprint("Concurrent ", i), tags[i%4:]...)
		})
	}
	wg.Wait()
	checkCounts("after concurrent creates")

	// A database that had articles before the counts existed.
	_, err := api.db.Exec(`
		DROP TABLE tag_counts, article_count;
		DROP FUNCTION count_articles CASCADE;
		INSERT INTO articles (slug, title, description, body, tags, author_id)
		SELECT 'old-' || id || '-' || i, 'Old', 'Old', 'Old', ARRAY['old', 'go'], author_id FROM articles, generate_series(1, 3) i`)
	if err != nil {
		t.Fatal(err)
	}
	// The schema applied before the counts was another one.
	if _, err := api.db.Exec(`DELETE FROM schema_applied`); err != nil {
		t.Fatal(err)
	}
	if err := applySchema(t.Context(), api.db); err != nil {
		t.Fatal(err)
	}
	checkCounts("after the first boot with the counts")
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	api.call("GET", "/api/nothing-here", "", nil).wantError(http.StatusNotFound, "no such route")
	res := api.call("PUT", "/api/tags", "", nil)
	res.wantError(http.StatusMethodNotAllowed, "not allowed")
	if allow := res.header.Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("Allow = %q, want it to list GET", allow)
	}
	api.call("PATCH", "/api/articles/x", "", nil).wantError(http.StatusMethodNotAllowed, "not allowed")
}

func TestCORS(t *testing.T) {
	t.Parallel()
	preflight := func(api *testAPI, origin string) *testResponse {
		req, _ := http.NewRequest("OPTIONS", api.url+"/api/articles", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
		return api.do(req)
	}

	open := newTestAPI(t)
	res := preflight(open, "https://frontend.example")
	res.want(http.StatusNoContent, nil)
	if got := res.header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Allow-Origin = %q, want *", got)
	}
	if got := res.header.Get("Access-Control-Allow-Headers"); !strings.Contains(got, "Authorization") || !strings.Contains(got, "Content-Type") {
		t.Errorf("Allow-Headers = %q", got)
	}
	if got := res.header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "DELETE") || !strings.Contains(got, "PUT") {
		t.Errorf("Allow-Methods = %q", got)
	}

	closed := newTestAPIWithEnv(t, map[string]string{"CORS_ORIGINS": "https://good.example"})
	res = preflight(closed, "https://good.example")
	if got := res.header.Get("Access-Control-Allow-Origin"); got != "https://good.example" {
		t.Errorf("Allow-Origin for a listed origin = %q", got)
	}
	res = preflight(closed, "https://evil.example")
	if got := res.header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("Allow-Origin for an unlisted origin = %q, want none", got)
	}
	if got := res.header.Get("Vary"); got != "Origin" {
		t.Errorf("Vary for an unlisted origin = %q, want Origin: caches must not serve it to a listed one", got)
	}
	req, _ := http.NewRequest("GET", closed.url+"/api/tags", nil)
	req.Header.Set("Origin", "https://good.example")
	res = closed.do(req)
	res.want(http.StatusOK, nil)
	if got := res.header.Get("Access-Control-Allow-Origin"); got != "https://good.example" {
		t.Errorf("Allow-Origin on a simple request = %q", got)
	}
}

// TestTokens feeds the API tokens it must refuse: each is a 401.
func TestTokens(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	user := api.register("sam")
	api.call("GET", "/api/user", user.Token, nil).want(http.StatusOK, nil)

	b64 := base64.RawURLEncoding.EncodeToString
	parts := strings.Split(user.Token, ".")
	claims := b64([]byte(fmt.Sprintf(`{"sub":"1","exp":%d}`, time.Now().Add(time.Hour).Unix())))
	signWith := func(key, header, claims string) string {
		s := &server{jwtKey: []byte(key)}
		unsigned := header + "." + claims
		return unsigned + "." + b64(s.sign(unsigned))
	}
	hs256 := b64([]byte(`{"alg":"HS256","typ":"JWT"}`))
	expired := *api.srv
	expired.now = func() time.Time { return time.Now().Add(-tokenLifetime - time.Minute) }

	tests := []struct{ name, token string }{
		{"alg none", b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + claims + "."},
		{"alg none, signed", signWith("test-secret-test-secret-test-secret", b64([]byte(`{"alg":"none"}`)), claims)},
		{"HS512 header", signWith("test-secret-test-secret-test-secret", b64([]byte(`{"alg":"HS512","typ":"JWT"}`)), claims)},
		{"RS256 header", signWith("test-secret-test-secret-test-secret", b64([]byte(`{"alg":"RS256","typ":"JWT"}`)), claims)},
		{"changed payload", parts[0] + "." + b64([]byte(`{"sub":"2","exp":9999999999}`)) + "." + parts[2]},
		{"bad signature", parts[0] + "." + parts[1] + "." + b64([]byte("not the signature at all, no....."))},
		{"padded base64", parts[0] + "." + parts[1] + "." + parts[2] + "="},
		{"standard base64", parts[0] + "." + parts[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(parts[2]) + "+"},
		{"two segments", parts[0] + "." + parts[1]},
		{"four segments", user.Token + "." + parts[2]},
		{"over 8 KiB", parts[0] + "." + b64([]byte(strings.Repeat("x", 8<<10))) + "." + parts[2]},
		{"expired", expired.issueToken(1)},
		{"another secret", signWith("another-secret-another-secret-xx", hs256, claims)},
		{"no expiry", signWith("test-secret-test-secret-test-secret", hs256, b64([]byte(`{"sub":"1"}`)))},
		{"subject not a number", signWith("test-secret-test-secret-test-secret", hs256, b64([]byte(fmt.Sprintf(`{"sub":"sam","exp":%d}`, time.Now().Add(time.Hour).Unix()))))},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", api.url+"/api/user", nil)
			req.Header.Set("Authorization", "Token "+tt.token)
			api.do(req).wantError(http.StatusUnauthorized, "token")
		})
	}

	// A well-formed token for a user that does not exist is refused too.
	api.call("GET", "/api/user", signWith("test-secret-test-secret-test-secret", hs256,
		b64([]byte(fmt.Sprintf(`{"sub":"424242","exp":%d}`, time.Now().Add(time.Hour).Unix())))), nil).wantError(http.StatusUnauthorized, "token")
}

// TestStatementsPerRequest counts the statements each read sends to the
// database: a constant, whatever the page size or the number of tags,
// favorites and comments.
func TestStatementsPerRequest(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	writer := api.register("writer")
	reader := api.register("reader")
	api.call("POST", "/api/profiles/writer/follow", reader.Token, nil).want(http.StatusOK, nil)
	var slug string
	for i := range 25 {
		a := api.createArticle(writer.Token, fmt.Sprintf("Article %d", i), "one", "two", "three")
		api.call("POST", "/api/articles/"+a.Slug+"/favorite", reader.Token, nil).want(http.StatusOK, nil)
		api.call("POST", "/api/articles/"+a.Slug+"/comments", reader.Token, `{"comment":{"body":"hi"}}`).want(http.StatusOK, nil)
		slug = a.Slug
	}
	for range 5 {
		api.call("POST", "/api/articles/"+slug+"/comments", writer.Token, `{"comment":{"body":"more"}}`).want(http.StatusOK, nil)
	}

	tests := []struct {
		path  string
		token string
		want  int64
	}{
		{"/api/articles", "", 2},
		{"/api/articles?limit=100", reader.Token, 2},
		{"/api/articles?tag=two&limit=50", reader.Token, 2},
		{"/api/articles?author=writer", reader.Token, 2},
		{"/api/articles?favorited=reader", reader.Token, 2},
		{"/api/articles/feed", reader.Token, 2},
		{"/api/articles/" + slug, reader.Token, 1},
		{"/api/articles/" + slug + "/comments", reader.Token, 2},
		{"/api/profiles/writer", reader.Token, 1},
		{"/api/tags", "", 1},
		{"/api/user", reader.Token, 1},
	}
	for _, tt := range tests {
		before := api.statements.Load()
		api.call("GET", tt.path, tt.token, nil).want(http.StatusOK, nil)
		if got := api.statements.Load() - before; got != tt.want {
			t.Errorf("GET %s ran %d statements, want %d", tt.path, got, tt.want)
		}
	}
}

func TestRequestLogs(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t)
	req, _ := http.NewRequest("POST", api.url+"/api/users", strings.NewReader(
		`{"user":{"username":"tess","email":"tess@example.com","password":"`+testPassword+`"}}`))
	req.Header.Set("X-Request-Id", "abc-123")
	res := api.do(req)
	res.want(http.StatusCreated, nil)
	if got := res.header.Get("X-Request-Id"); got != "abc-123" {
		t.Errorf("X-Request-Id = %q, want the caller's", got)
	}
	var token struct{ User testUser }
	json.Unmarshal(res.body, &token)
	api.call("GET", "/api/user", token.User.Token, nil).want(http.StatusOK, nil)
	res = api.call("GET", "/api/tags", "", nil)
	if id := res.header.Get("X-Request-Id"); len(id) != 16 {
		t.Errorf("generated X-Request-Id = %q, want 16 hex digits", id)
	}

	logs := api.logs.String()
	var line struct {
		Msg       string `json:"msg"`
		Method    string `json:"method"`
		Route     string `json:"route"`
		Status    int    `json:"status"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(logs, "\n", 2)[0]), &line); err != nil {
		t.Fatalf("log line is not JSON: %v\n%s", err, logs)
	}
	if line.Msg != "request" || line.Method != "POST" || line.Route != "POST /api/users" || line.Status != 201 || line.RequestID != "abc-123" {
		t.Errorf("log line = %+v", line)
	}
	for _, secret := range []string{testPassword, token.User.Token, "pbkdf2"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs hold a secret (%q):\n%s", secret, logs)
		}
	}
}
