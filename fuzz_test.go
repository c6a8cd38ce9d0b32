// fuzz_test.go holds the fuzz targets: request bodies against the real
// handler and database, and token parsing. Seed corpora live in
// testdata/fuzz; CI runs each target briefly.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzRequestBody sends arbitrary bodies to every endpoint that reads one:
// whatever the body, the answer is JSON and never a 5xx.
func FuzzRequestBody(f *testing.F) {
	api := newTestAPI(f)
	user := api.seedUser("fuzzer")
	a := api.createArticle(user.Token, "Target")
	handler := api.srv.routes()
	endpoints := []struct{ method, path string }{
		{"POST", "/api/users"},
		{"POST", "/api/users/login"},
		{"PUT", "/api/user"},
		{"POST", "/api/articles"},
		{"PUT", "/api/articles/" + a.Slug},
		{"POST", "/api/articles/" + a.Slug + "/comments"},
	}
	for i := range endpoints {
		for _, body := range []string{
			``, `{}`, `null`, `[]`, `"x"`, `{"user":null}`, `{"article":{"tagList":[null]}}`,
			`{"user":{"email":"a@b.co","password":"password123","username":"u"}}`,
			`{"article":{"title":"t","description":"d","body":"b","tagList":["a","b"]}}`,
			`{"comment":{"body":"c"}}`, `{"user":{"Email":"x"}}`, `{"a":1} {"b":2}`,
		} {
			f.Add(uint8(i), []byte(body))
		}
	}
	f.Fuzz(func(t *testing.T, endpoint uint8, body []byte) {
		e := endpoints[int(endpoint)%len(endpoints)]
		req := httptest.NewRequest(e.method, e.path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Token "+user.Token)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s with body %q: status %d %s", e.method, e.path, body, rec.Code, rec.Body)
		}
		if rec.Code != 204 && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s with body %q: answer is not JSON: %s", e.method, e.path, body, rec.Body)
		}
	})
}

// FuzzParseToken feeds arbitrary tokens to the parser: it never panics, and
// it accepts only tokens carrying the service's own signature over their
// exact text.
func FuzzParseToken(f *testing.F) {
	s := &server{jwtKey: []byte("fuzz-secret-fuzz-secret-fuzz-secret"), now: time.Now}
	valid := s.issueToken(42)
	parts := strings.Split(valid, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	for _, seed := range []string{
		valid, "", ".", "..", "a.b.c", valid + ".", valid + "=",
		b64([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".",
		b64([]byte(`{"alg":"HS512"}`)) + "." + parts[1] + "." + parts[2],
		parts[0] + "." + b64([]byte(`{"sub":"1","exp":99999999999}`)) + "." + parts[2],
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := s.parseToken(token)
		if err != nil {
			return
		}
		p := strings.Split(token, ".")
		if len(p) != 3 || p[2] != b64(s.sign(p[0]+"."+p[1])) {
			t.Fatalf("accepted %q, which the service did not sign", token)
		}
		if id <= 0 {
			t.Fatalf("accepted %q with user id %d", token, id)
		}
	})
}
