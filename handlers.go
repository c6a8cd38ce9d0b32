// handlers.go holds the HTTP side of the service: the route table, the
// handlers, the middleware, tokens and passwords, and the JSON and error
// helpers.
package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// server holds what the handlers share.
type server struct {
	db     database
	log    *slog.Logger
	now    func() time.Time
	jwtKey []byte
	// corsOrigins lists the origins browsers may call from; "*" allows all.
	corsOrigins []string
	// hashSlots caps concurrent password hashing, which costs ~100 ms of
	// CPU each, so a burst of logins cannot starve every other request
	// (see hashingSlots).
	hashSlots chan struct{}
	// hashWait is how long a password hash waits for a slot before the
	// request is told to come back later.
	hashWait time.Duration
	// requestTimeout bounds each request's work, waiting for a pooled
	// connection or a hashing slot included, so a stuck database answers
	// 503 instead of hanging.
	requestTimeout time.Duration
	// limiter bounds logins and registrations per client address.
	limiter *rateLimiter
}

// routes lists the whole API.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)

	handle := func(pattern string, h apiFunc) { mux.Handle(pattern, s.api(h)) }
	handle("POST /api/users", s.limitRate(s.handleUserRegister))
	handle("POST /api/users/login", s.limitRate(s.handleUserLogin))
	handle("GET /api/user", s.requireUser(s.handleUserGet))
	handle("PUT /api/user", s.requireUser(s.handleUserUpdate))

	handle("GET /api/profiles/{username}", s.optionalUser(s.handleProfileGet))
	handle("POST /api/profiles/{username}/follow", s.requireUser(s.handleProfileFollow))
	handle("DELETE /api/profiles/{username}/follow", s.requireUser(s.handleProfileUnfollow))

	handle("GET /api/articles", s.optionalUser(s.handleArticleList))
	handle("GET /api/articles/feed", s.requireUser(s.handleArticleFeed))
	handle("POST /api/articles", s.requireUser(s.handleArticleCreate))
	handle("GET /api/articles/{slug}", s.optionalUser(s.handleArticleGet))
	handle("PUT /api/articles/{slug}", s.requireUser(s.handleArticleUpdate))
	handle("DELETE /api/articles/{slug}", s.requireUser(s.handleArticleDelete))
	handle("POST /api/articles/{slug}/favorite", s.requireUser(s.handleArticleFavorite))
	handle("DELETE /api/articles/{slug}/favorite", s.requireUser(s.handleArticleUnfavorite))

	handle("GET /api/articles/{slug}/comments", s.optionalUser(s.handleCommentList))
	handle("POST /api/articles/{slug}/comments", s.requireUser(s.handleCommentCreate))
	handle("DELETE /api/articles/{slug}/comments/{id}", s.requireUser(s.handleCommentDelete))

	handle("GET /api/tags", s.handleTagList)

	return s.logRequests(s.recoverPanics(s.cors(s.withDeadline(jsonMuxErrors(mux)))))
}

// Limits.
const (
	maxBodyBytes   = 1 << 20
	maxHeaderBytes = 32 << 10
	maxPageSize    = 100
	defaultPage    = 20
	tokenLifetime  = 30 * 24 * time.Hour
	maxTokenLength = 4096
)

// Health.

func (s *server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	// Liveness only: the platform restarts instances that fail this, and a
	// database outage must not restart them all.
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"status":"ok"}`)
}

func (s *server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	if err := s.db.PingContext(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"status":"database unavailable"}`)
		return
	}
	io.WriteString(w, `{"status":"ok"}`)
}

// Users.

type userResponse struct {
	User userBody `json:"user"`
}

type userBody struct {
	Email    string `json:"email"`
	Token    string `json:"token"`
	Username string `json:"username"`
	Bio      string `json:"bio"`
	Image    string `json:"image"`
}

func newUserResponse(u user, token string) userResponse {
	return userResponse{userBody{
		Email:    u.Email,
		Token:    token,
		Username: u.Username,
		Bio:      u.Bio,
		Image:    u.Image,
	}}
}

func (s *server) handleUserRegister(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		User *struct {
			Username string `json:"username"`
			Email    string `json:"email"`
			Password string `json:"password"`
		} `json:"user"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.User == nil {
		return invalid("user is required")
	}
	in := req.User
	in.Username = strings.TrimSpace(in.Username)
	in.Email = strings.TrimSpace(in.Email)
	var problems []string
	problems = append(problems, checkUsername(in.Username)...)
	problems = append(problems, checkEmail(in.Email)...)
	problems = append(problems, checkPassword(in.Password)...)
	if len(problems) > 0 {
		return invalid(problems...)
	}
	hash, err := s.hashPassword(r.Context(), in.Password)
	if err != nil {
		return err
	}
	u, err := s.db.createUser(r.Context(), in.Username, in.Email, hash)
	if err != nil {
		return err
	}
	return encode(w, http.StatusCreated, newUserResponse(u, s.issueToken(u.ID)))
}

func (s *server) handleUserLogin(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		User *struct {
			Email    string `json:"email"`
			Password string `json:"password"`
		} `json:"user"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.User == nil {
		return invalid("user is required")
	}
	var problems []string
	if strings.TrimSpace(req.User.Email) == "" {
		problems = append(problems, "email can't be blank")
	}
	if req.User.Password == "" {
		problems = append(problems, "password can't be blank")
	}
	if len(problems) > 0 {
		return invalid(problems...)
	}
	u, err := s.db.userByEmail(r.Context(), strings.TrimSpace(req.User.Email))
	if err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	// An unknown email costs the same hash as a wrong password and gets the
	// same answer, so neither timing nor message tells which emails exist.
	stored := u.PasswordHash
	if errors.Is(err, errNotFound) {
		stored = dummyPasswordHash
	}
	ok, err := s.verifyPassword(r.Context(), stored, req.User.Password)
	if err != nil {
		return err
	}
	if !ok || u.ID == 0 {
		return &apiError{http.StatusUnauthorized, []string{"email or password is invalid"}}
	}
	return encode(w, http.StatusOK, newUserResponse(u, s.issueToken(u.ID)))
}

func (s *server) handleUserGet(w http.ResponseWriter, r *http.Request) error {
	viewer := viewerOf(r)
	u, err := s.db.userByID(r.Context(), viewer.id)
	if errors.Is(err, errNotFound) {
		return errUnauthorized // a valid token for a user that is gone
	}
	if err != nil {
		return err
	}
	return encode(w, http.StatusOK, newUserResponse(u, viewer.token))
}

func (s *server) handleUserUpdate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		User *struct {
			Username *string `json:"username"`
			Email    *string `json:"email"`
			Password *string `json:"password"`
			Bio      *string `json:"bio"`
			Image    *string `json:"image"`
		} `json:"user"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.User == nil {
		return invalid("user is required")
	}
	in := req.User
	var problems []string
	if in.Username != nil {
		*in.Username = strings.TrimSpace(*in.Username)
		problems = append(problems, checkUsername(*in.Username)...)
	}
	if in.Email != nil {
		*in.Email = strings.TrimSpace(*in.Email)
		problems = append(problems, checkEmail(*in.Email)...)
	}
	if in.Password != nil {
		problems = append(problems, checkPassword(*in.Password)...)
	}
	if in.Bio != nil && utf8.RuneCountInString(*in.Bio) > 1000 {
		problems = append(problems, "bio is too long (maximum is 1000 characters)")
	}
	if in.Image != nil && len(*in.Image) > 2000 {
		problems = append(problems, "image is too long (maximum is 2000 characters)")
	}
	if len(problems) > 0 {
		return invalid(problems...)
	}
	changes := userChanges{Username: in.Username, Email: in.Email, Bio: in.Bio, Image: in.Image}
	if in.Password != nil {
		hash, err := s.hashPassword(r.Context(), *in.Password)
		if err != nil {
			return err
		}
		changes.PasswordHash = &hash
	}
	viewer := viewerOf(r)
	u, err := s.db.updateUser(r.Context(), viewer.id, changes)
	if errors.Is(err, errNotFound) {
		return errUnauthorized
	}
	if err != nil {
		return err
	}
	return encode(w, http.StatusOK, newUserResponse(u, viewer.token))
}

func checkUsername(username string) []string {
	switch {
	case username == "":
		return []string{"username can't be blank"}
	case utf8.RuneCountInString(username) > 64:
		return []string{"username is too long (maximum is 64 characters)"}
	case strings.ContainsFunc(username, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune("_-.", r)
	}):
		// Frontends put the name in URLs as it is: no space, '?', '#', '/'.
		return []string{"username may contain only letters, digits, '_', '-' and '.'"}
	}
	return nil
}

func checkEmail(email string) []string {
	switch {
	case email == "":
		return []string{"email can't be blank"}
	case len(email) > 254:
		return []string{"email is too long (maximum is 254 characters)"}
	}
	if addr, err := mail.ParseAddress(email); err != nil || addr.Address != email {
		return []string{"email is invalid"}
	}
	return nil
}

func checkPassword(password string) []string {
	switch {
	case password == "":
		return []string{"password can't be blank"}
	case len(password) < 8:
		return []string{"password is too short (minimum is 8 characters)"}
	case len(password) > 256:
		return []string{"password is too long (maximum is 256 characters)"}
	}
	return nil
}

// Profiles.

type profileResponse struct {
	Profile profile `json:"profile"`
}

func (s *server) handleProfileGet(w http.ResponseWriter, r *http.Request) error {
	return s.answerProfile(w, r, s.db.profile)
}

func (s *server) handleProfileFollow(w http.ResponseWriter, r *http.Request) error {
	return s.answerProfile(w, r, s.db.follow)
}

func (s *server) handleProfileUnfollow(w http.ResponseWriter, r *http.Request) error {
	return s.answerProfile(w, r, s.db.unfollow)
}

// answerProfile answers with the profile in the path as the viewer sees it
// once get (which may follow or unfollow it) has run.
func (s *server) answerProfile(w http.ResponseWriter, r *http.Request, get func(context.Context, int64, string) (profile, error)) error {
	p, err := get(r.Context(), viewerOf(r).id, r.PathValue("username"))
	if err != nil {
		return notFound("profile", err)
	}
	return encode(w, http.StatusOK, profileResponse{p})
}

// Articles.

type articleResponse struct {
	Article article `json:"article"`
}

type articlesResponse struct {
	Articles      []article `json:"articles"`
	ArticlesCount int       `json:"articlesCount"`
}

func (s *server) handleArticleList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := articleFilter{Tag: q.Get("tag"), Author: q.Get("author"), FavoritedBy: q.Get("favorited")}
	return s.listArticles(w, r, f)
}

func (s *server) handleArticleFeed(w http.ResponseWriter, r *http.Request) error {
	return s.listArticles(w, r, articleFilter{FeedOf: viewerOf(r).id})
}

func (s *server) listArticles(w http.ResponseWriter, r *http.Request, f articleFilter) error {
	var err error
	if f.Limit, f.Offset, err = pagination(r); err != nil {
		return err
	}
	articles, total, err := s.db.listArticles(r.Context(), viewerOf(r).id, f)
	if err != nil {
		return err
	}
	return encode(w, http.StatusOK, articlesResponse{articles, total})
}

// pagination reads limit and offset; a limit above the maximum is capped.
func pagination(r *http.Request) (limit, offset int, err error) {
	limit, offset = defaultPage, 0
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		limit, err = strconv.Atoi(v)
		if err != nil || limit < 1 {
			return 0, 0, invalid("limit must be a positive integer")
		}
		limit = min(limit, maxPageSize)
	}
	if v := q.Get("offset"); v != "" {
		offset, err = strconv.Atoi(v)
		if err != nil || offset < 0 || offset > 1_000_000_000 {
			return 0, 0, invalid("offset must be a non-negative integer")
		}
	}
	return limit, offset, nil
}

func (s *server) handleArticleGet(w http.ResponseWriter, r *http.Request) error {
	a, err := s.db.articleBySlug(r.Context(), viewerOf(r).id, r.PathValue("slug"))
	if err != nil {
		return notFound("article", err)
	}
	return encode(w, http.StatusOK, articleResponse{a})
}

func (s *server) handleArticleCreate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Article *struct {
			Title       string   `json:"title"`
			Description string   `json:"description"`
			Body        string   `json:"body"`
			TagList     []string `json:"tagList"`
		} `json:"article"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Article == nil {
		return invalid("article is required")
	}
	in := req.Article
	fields := articleFields{
		Title:       strings.TrimSpace(in.Title),
		Description: strings.TrimSpace(in.Description),
		Body:        in.Body,
	}
	var problems []string
	problems = append(problems, checkText("title", fields.Title, 256)...)
	problems = append(problems, checkText("description", fields.Description, 1024)...)
	problems = append(problems, checkText("body", strings.TrimSpace(fields.Body), maxBodyBytes)...)
	tags, tagProblems := cleanTags(in.TagList)
	problems = append(problems, tagProblems...)
	if len(problems) > 0 {
		return invalid(problems...)
	}
	fields.Tags = tags
	viewer := viewerOf(r)
	slug, err := s.db.createArticle(r.Context(), viewer.id, fields)
	if err != nil {
		return err
	}
	a, err := s.db.articleBySlug(r.Context(), viewer.id, slug)
	if err != nil {
		return err
	}
	return encode(w, http.StatusCreated, articleResponse{a})
}

func (s *server) handleArticleUpdate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Article *struct {
			Title       *string   `json:"title"`
			Description *string   `json:"description"`
			Body        *string   `json:"body"`
			TagList     *[]string `json:"tagList"`
		} `json:"article"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Article == nil {
		return invalid("article is required")
	}
	in := req.Article
	changes := articleChanges{Description: in.Description, Body: in.Body}
	var problems []string
	if in.Title != nil {
		title := strings.TrimSpace(*in.Title)
		changes.Title = &title
		problems = append(problems, checkText("title", title, 256)...)
	}
	if in.Description != nil {
		description := strings.TrimSpace(*in.Description)
		changes.Description = &description
		problems = append(problems, checkText("description", description, 1024)...)
	}
	if in.Body != nil {
		problems = append(problems, checkText("body", strings.TrimSpace(*in.Body), maxBodyBytes)...)
	}
	if in.TagList != nil {
		tags, tagProblems := cleanTags(*in.TagList)
		changes.Tags = &tags
		problems = append(problems, tagProblems...)
	}
	if len(problems) > 0 {
		return invalid(problems...)
	}

	slug, viewer := r.PathValue("slug"), viewerOf(r)
	id, authorID, err := s.db.articleAuthor(r.Context(), slug)
	if err != nil {
		return notFound("article", err)
	}
	if authorID != viewer.id {
		return errForbidden
	}
	slug, err = s.db.updateArticle(r.Context(), id, slug, changes)
	if err != nil {
		return notFound("article", err)
	}
	a, err := s.db.articleBySlug(r.Context(), viewer.id, slug)
	if err != nil {
		return notFound("article", err)
	}
	return encode(w, http.StatusOK, articleResponse{a})
}

func (s *server) handleArticleDelete(w http.ResponseWriter, r *http.Request) error {
	id, authorID, err := s.db.articleAuthor(r.Context(), r.PathValue("slug"))
	if err != nil {
		return notFound("article", err)
	}
	if authorID != viewerOf(r).id {
		return errForbidden
	}
	if err := s.db.deleteArticle(r.Context(), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleArticleFavorite(w http.ResponseWriter, r *http.Request) error {
	return s.changeFavorite(w, r, s.db.favorite)
}

func (s *server) handleArticleUnfavorite(w http.ResponseWriter, r *http.Request) error {
	return s.changeFavorite(w, r, s.db.unfavorite)
}

func (s *server) changeFavorite(w http.ResponseWriter, r *http.Request, change func(context.Context, int64, string) error) error {
	slug, viewer := r.PathValue("slug"), viewerOf(r)
	err := change(r.Context(), viewer.id, slug)
	if err != nil {
		return notFound("article", err)
	}
	a, err := s.db.articleBySlug(r.Context(), viewer.id, slug)
	if err != nil {
		return notFound("article", err)
	}
	return encode(w, http.StatusOK, articleResponse{a})
}

// checkText checks a required text field against a maximum length in
// characters.
func checkText(field, value string, maxLen int) []string {
	switch {
	case value == "":
		return []string{field + " can't be blank"}
	case utf8.RuneCountInString(value) > maxLen:
		return []string{fmt.Sprintf("%s is too long (maximum is %d characters)", field, maxLen)}
	}
	return nil
}

const (
	maxTagsPerArticle = 20
	maxTagLength      = 64
)

// cleanTags trims tags, drops empty ones and repeats, and sorts them: the
// conformance suite expects tagList in alphabetical order.
func cleanTags(tags []string) ([]string, []string) {
	cleaned := []string{}
	seen := map[string]bool{}
	for _, tag := range tags {
		tag = strings.TrimSpace(tag)
		if tag == "" || seen[tag] {
			continue
		}
		if utf8.RuneCountInString(tag) > maxTagLength {
			return nil, []string{fmt.Sprintf("tags must be at most %d characters", maxTagLength)}
		}
		seen[tag] = true
		cleaned = append(cleaned, tag)
	}
	if len(cleaned) > maxTagsPerArticle {
		return nil, []string{fmt.Sprintf("an article can have at most %d tags", maxTagsPerArticle)}
	}
	slices.Sort(cleaned)
	return cleaned, nil
}

// Comments.

type commentResponse struct {
	Comment comment `json:"comment"`
}

type commentsResponse struct {
	Comments []comment `json:"comments"`
}

func (s *server) handleCommentList(w http.ResponseWriter, r *http.Request) error {
	comments, err := s.db.comments(r.Context(), viewerOf(r).id, r.PathValue("slug"))
	if err != nil {
		return notFound("article", err)
	}
	return encode(w, http.StatusOK, commentsResponse{comments})
}

func (s *server) handleCommentCreate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Comment *struct {
			Body string `json:"body"`
		} `json:"comment"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Comment == nil {
		return invalid("comment is required")
	}
	if problems := checkText("body", strings.TrimSpace(req.Comment.Body), 10_000); len(problems) > 0 {
		return invalid(problems...)
	}
	c, err := s.db.addComment(r.Context(), viewerOf(r).id, r.PathValue("slug"), req.Comment.Body)
	if err != nil {
		return notFound("article", err)
	}
	// The spec answers a new comment with 200, unlike a new article or user.
	return encode(w, http.StatusOK, commentResponse{c})
}

func (s *server) handleCommentDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return notFound("comment", errNotFound)
	}
	authorID, err := s.db.commentAuthor(r.Context(), r.PathValue("slug"), id)
	if err != nil {
		return notFound("comment", err)
	}
	if authorID != viewerOf(r).id {
		return errForbidden
	}
	if err := s.db.deleteComment(r.Context(), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Tags.

func (s *server) handleTagList(w http.ResponseWriter, r *http.Request) error {
	tags, err := s.db.tags(r.Context())
	if err != nil {
		return err
	}
	return encode(w, http.StatusOK, struct {
		Tags []string `json:"tags"`
	}{tags})
}

// Errors.

// apiError is an error with the status and messages a client sees.
type apiError struct {
	Status   int
	Messages []string
}

func (e *apiError) Error() string { return strings.Join(e.Messages, "; ") }

var (
	errNotFound     = &apiError{http.StatusNotFound, []string{"not found"}}
	errUnauthorized = &apiError{http.StatusUnauthorized, []string{"missing, invalid or expired token"}}
	errForbidden    = &apiError{http.StatusForbidden, []string{"only the author may change this"}}
	errTooLarge     = &apiError{http.StatusRequestEntityTooLarge, []string{fmt.Sprintf("body must not be larger than %d bytes", maxBodyBytes)}}
	errUnavailable  = &apiError{http.StatusServiceUnavailable, []string{"the service is temporarily unavailable, try again shortly"}}
	errBusy         = &apiError{http.StatusServiceUnavailable, []string{"the service is busy, try again shortly"}}
	errTooMany      = &apiError{http.StatusTooManyRequests, []string{"too many attempts, try again later"}}
)

// invalid is the error for a request that fails validation.
func invalid(problems ...string) error {
	return &apiError{http.StatusUnprocessableEntity, problems}
}

// notFound names what was not found in a not-found error and passes other
// errors on.
func notFound(what string, err error) error {
	if errors.Is(err, errNotFound) {
		return &apiError{http.StatusNotFound, []string{what + " not found"}}
	}
	return err
}

// apiFunc is a handler that returns its error for writeError to answer.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

func (s *server) api(h apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// writeError answers err in the RealWorld error body. Errors meant for the
// client carry their status; anything else is a 500 with a generic message,
// and its detail goes only to the log.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e, ok := errors.AsType[*apiError](err)
	if !ok {
		e = &apiError{http.StatusInternalServerError, []string{"internal server error"}}
	}
	if e.Status >= 500 || errors.Is(err, errUnavailable) {
		recordError(r, err)
	}
	if e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeErrorBody(w, e)
}

func writeErrorBody(w http.ResponseWriter, e *apiError) {
	var body struct {
		Errors struct {
			Body []string `json:"body"`
		} `json:"errors"`
	}
	body.Errors.Body = e.Messages
	encode(w, e.Status, body)
}

// JSON.

func encode(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	// The status is sent: an error now means the client went away, and there
	// is nothing left to tell it.
	json.NewEncoder(w).Encode(v)
	return nil
}

// decode reads a JSON body of at most maxBodyBytes holding exactly one
// value into v, and turns each way that can fail into a message a client
// can act on.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return errTooLarge
	}
	if err != nil {
		return invalid("body could not be read")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	err = dec.Decode(v)
	if err == nil {
		if err = dec.Decode(&struct{}{}); err != io.EOF {
			return invalid("body must hold a single JSON value")
		}
		// encoding/json matches keys regardless of case, so "Email" would
		// set email: refuse such keys rather than guess what was meant.
		if key := caseVariantKey(data, reflect.TypeOf(v)); key != "" {
			return invalid(fmt.Sprintf("unknown field %q: field names are case-sensitive", key))
		}
		return nil
	}
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return invalid("body must not be empty")
	case errors.As(err, &syntaxErr):
		return invalid(fmt.Sprintf("body is not valid JSON (at byte %d)", syntaxErr.Offset))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("body is not valid JSON (it ends too early)")
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return invalid("body must be a JSON object")
		}
		return invalid(fmt.Sprintf("%s must be of type %s", typeErr.Field, jsonTypeName(typeErr.Type.Kind())))
	}
	return invalid("body could not be read")
}

// caseVariantKey returns the first key in the JSON object data, or in the
// objects nested in it, that names a field of t only when case is ignored.
func caseVariantKey(data []byte, t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return ""
	}
	var object map[string]json.RawMessage
	if json.Unmarshal(data, &object) != nil {
		return ""
	}
	for key, value := range object {
		for field := range t.Fields() {
			name, _, _ := strings.Cut(field.Tag.Get("json"), ",")
			switch {
			case key == name:
				if nested := caseVariantKey(value, field.Type); nested != "" {
					return nested
				}
			case strings.EqualFold(key, name):
				return key
			}
		}
	}
	return ""
}

func jsonTypeName(kind reflect.Kind) string {
	switch kind {
	case reflect.String:
		return "string"
	case reflect.Slice:
		return "array"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "object"
	case reflect.Bool:
		return "boolean"
	}
	return "number"
}

// jsonMuxErrors answers the mux's own 404 and 405 (plain text by default)
// in the API's JSON error body, keeping the Allow header.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			if l, ok := r.Context().Value(requestLogKey{}).(*requestLog); ok {
				l.route = pattern
			}
			mux.ServeHTTP(w, r)
			return
		}
		rec := &headerRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusNotFound:
			writeErrorBody(w, &apiError{http.StatusNotFound, []string{"no such route: " + r.Method + " " + r.URL.Path}})
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeErrorBody(w, &apiError{http.StatusMethodNotAllowed, []string{"method " + r.Method + " not allowed here"}})
		default: // a redirect to the cleaned path
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
		}
	})
}

// headerRecorder keeps the status and headers a handler writes and drops
// its body.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(status int)      { h.status = status }

// Authentication.

// viewer is who makes a request: id 0 is anonymous.
type viewer struct {
	id    int64
	token string
}

type viewerKey struct{}

func viewerOf(r *http.Request) viewer {
	v, _ := r.Context().Value(viewerKey{}).(viewer)
	return v
}

// requireUser lets through only requests with a valid token.
func (s *server) requireUser(h apiFunc) apiFunc {
	return s.authenticate(h, true)
}

// optionalUser lets anonymous requests through but rejects a bad token, so
// a client never mistakes an expired session for an anonymous one.
func (s *server) optionalUser(h apiFunc) apiFunc {
	return s.authenticate(h, false)
}

func (s *server) authenticate(h apiFunc, required bool) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		header := r.Header.Get("Authorization")
		if header == "" {
			if required {
				return errUnauthorized
			}
			return h(w, r)
		}
		scheme, token, ok := strings.Cut(header, " ")
		if !ok || !(strings.EqualFold(scheme, "Token") || strings.EqualFold(scheme, "Bearer")) {
			return errUnauthorized
		}
		token = strings.TrimSpace(token)
		id, err := s.parseToken(token)
		if err != nil {
			return errUnauthorized
		}
		ctx := context.WithValue(r.Context(), viewerKey{}, viewer{id: id, token: token})
		return h(w, r.WithContext(ctx))
	}
}

// Tokens are HS256 JWTs carrying the user id as the subject.

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

type jwtClaims struct {
	Subject   string `json:"sub"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
}

func (s *server) issueToken(userID int64) string {
	now := s.now()
	claims, _ := json.Marshal(jwtClaims{
		Subject:   strconv.FormatInt(userID, 10),
		IssuedAt:  now.Unix(),
		ExpiresAt: now.Add(tokenLifetime).Unix(),
	})
	unsigned := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(claims)
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(s.sign(unsigned))
}

func (s *server) sign(unsigned string) []byte {
	mac := hmac.New(sha256.New, s.jwtKey)
	mac.Write([]byte(unsigned))
	return mac.Sum(nil)
}

var strictBase64 = base64.RawURLEncoding.Strict()

// parseToken returns the user id of a token this service issued and that
// has not expired. It accepts HS256 only, whatever the header claims.
func (s *server) parseToken(token string) (int64, error) {
	if len(token) > maxTokenLength {
		return 0, errors.New("token too long")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0, errors.New("token must have three parts")
	}
	headerJSON, err := strictBase64.DecodeString(parts[0])
	if err != nil {
		return 0, fmt.Errorf("token header: %w", err)
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(headerJSON, &header); err != nil || header.Alg != "HS256" {
		return 0, errors.New("token algorithm must be HS256")
	}
	signature, err := strictBase64.DecodeString(parts[2])
	if err != nil {
		return 0, fmt.Errorf("token signature: %w", err)
	}
	if !hmac.Equal(signature, s.sign(parts[0]+"."+parts[1])) {
		return 0, errors.New("token signature does not match")
	}
	claimsJSON, err := strictBase64.DecodeString(parts[1])
	if err != nil {
		return 0, fmt.Errorf("token claims: %w", err)
	}
	var claims jwtClaims
	if err := json.Unmarshal(claimsJSON, &claims); err != nil {
		return 0, fmt.Errorf("token claims: %w", err)
	}
	if claims.ExpiresAt == 0 || s.now().Unix() >= claims.ExpiresAt {
		return 0, errors.New("token expired")
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return 0, errors.New("token subject is not a user id")
	}
	return id, nil
}

// Passwords are stored as "pbkdf2-sha256$<iterations>$<salt>$<hash>" so the
// cost can be raised later without locking anyone out.

const passwordIterations = 600_000

// dummyPasswordHash is checked for logins with an unknown email so they cost
// what a real check costs. No password matches it.
const dummyPasswordHash = "pbkdf2-sha256$600000$bi0o/jGSADeGoXGJK7GlEA$u/palKzds86GWJnPpeALNlDsSkuNTOaFYmW4mwTVdP8"

func (s *server) hashPassword(ctx context.Context, password string) (string, error) {
	salt := make([]byte, 16)
	rand.Read(salt)
	var hash []byte
	err := s.withHashSlot(ctx, func() (err error) {
		hash, err = pbkdf2.Key(sha256.New, password, salt, passwordIterations, sha256.Size)
		return err
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("pbkdf2-sha256$%d$%s$%s", passwordIterations,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(hash)), nil
}

// verifyPassword reports whether password matches the stored hash.
func (s *server) verifyPassword(ctx context.Context, stored, password string) (bool, error) {
	parts := strings.Split(stored, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return false, errors.New("stored password hash has an unknown format")
	}
	iterations, err := strconv.Atoi(parts[1])
	if err != nil || iterations < 1 {
		return false, errors.New("stored password hash has a bad iteration count")
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[2])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[3])
	if err := errors.Join(err1, err2); err != nil {
		return false, fmt.Errorf("stored password hash: %w", err)
	}
	var got []byte
	err = s.withHashSlot(ctx, func() (err error) {
		got, err = pbkdf2.Key(sha256.New, password, salt, iterations, len(want))
		return err
	})
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// withHashSlot runs hash once one of the hashing slots is free, or fails
// with errBusy when none frees up within s.hashWait.
func (s *server) withHashSlot(ctx context.Context, hash func() error) error {
	timer := time.NewTimer(s.hashWait)
	defer timer.Stop()
	select {
	case s.hashSlots <- struct{}{}:
	case <-timer.C:
		return errBusy
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errUnavailable, ctx.Err())
	}
	defer func() { <-s.hashSlots }()
	return hash()
}

// Middleware.

// withDeadline bounds each request by s.requestTimeout.
func (s *server) withDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// cors lets browser frontends on the allowed origins call the API. The API
// authenticates with a header, not cookies, so credentials are never allowed.
func (s *server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := origin != "" && s.originAllowed(origin)
		anyOrigin := len(s.corsOrigins) == 1 && s.corsOrigins[0] == "*"
		if !anyOrigin {
			// The answer depends on the origin: caches must key on it.
			w.Header().Add("Vary", "Origin")
		}
		if allowed {
			if anyOrigin {
				w.Header().Set("Access-Control-Allow-Origin", "*")
			} else {
				w.Header().Set("Access-Control-Allow-Origin", origin)
			}
			w.Header().Set("Access-Control-Expose-Headers", "X-Request-Id")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				w.Header().Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
				w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Requested-With, X-Request-Id")
				w.Header().Set("Access-Control-Max-Age", "86400")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) originAllowed(origin string) bool {
	for _, o := range s.corsOrigins {
		if o == "*" || o == origin {
			return true
		}
	}
	return false
}

// requestLog collects what the log line of one request reports.
type requestLog struct {
	route string // the pattern that matched, set by jsonMuxErrors
	err   error
}

type requestLogKey struct{}

// recordError attaches err to the request's log line.
func recordError(r *http.Request, err error) {
	if l, ok := r.Context().Value(requestLogKey{}).(*requestLog); ok {
		l.err = err
	}
}

// logRequests writes one JSON line per request and gives each request an id,
// taken from X-Request-Id when the caller sent a sensible one.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		entry := &requestLog{}
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestLogKey{}, entry)))

		level := slog.LevelInfo
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("route", cmp.Or(entry.route, "unmatched")),
			slog.Int("status", rec.status()),
			slog.Duration("duration", time.Since(start)),
			slog.Int64("bytes", rec.bytes),
			slog.String("request_id", id),
		}
		if entry.err != nil {
			level = slog.LevelError
			if errors.Is(entry.err, errUnavailable) || errors.Is(entry.err, errBusy) {
				level = slog.LevelWarn
			}
			attrs = append(attrs, slog.String("error", entry.err.Error()))
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:", c)) {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// statusRecorder remembers the status and size of a response for the log.
type statusRecorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *statusRecorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// recoverPanics turns a panic in a handler into a 500 on the request's log
// line, never a stack trace for the client. It runs inside logRequests so
// the line has the request id.
func (s *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			recordError(r, fmt.Errorf("panic: %v", v))
			if rec, ok := w.(*statusRecorder); ok && rec.code != 0 {
				return // the answer has begun: nothing sound can follow it
			}
			writeErrorBody(w, &apiError{http.StatusInternalServerError, []string{"internal server error"}})
		}()
		next.ServeHTTP(w, r)
	})
}

// limitRate refuses a client's logins and registrations beyond its share,
// so a guessing or sign-up flood from one address is bounded.
func (s *server) limitRate(h apiFunc) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !s.limiter.allow(s.limiter.clientAddr(r)) {
			return errTooMany
		}
		return h(w, r)
	}
}

// rateLimiter is a token bucket per client address: perMinute requests a
// minute, in bursts of up to perMinute.
type rateLimiter struct {
	perMinute float64
	// proxyHops is how many proxies in front of the service append to
	// X-Forwarded-For; the client is the entry the outermost one appended.
	proxyHops int
	now       func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(perMinute, proxyHops int, now func() time.Time) *rateLimiter {
	return &rateLimiter{
		perMinute: float64(perMinute),
		proxyHops: proxyHops,
		now:       now,
		buckets:   map[string]*bucket{},
	}
}

// maxBuckets bounds the limiter's memory; past it, idle buckets are dropped.
const maxBuckets = 100_000

func (l *rateLimiter) allow(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[client]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.dropBuckets(now)
		}
		b = &bucket{tokens: l.perMinute, last: now}
		l.buckets[client] = b
	}
	b.tokens = min(l.perMinute, b.tokens+now.Sub(b.last).Minutes()*l.perMinute)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// dropBuckets forgets the clients whose bucket has refilled, which changes
// nothing, and then, if that freed less than a tenth of the room, arbitrary
// others: a flood of new addresses must not grow the map, nor make every
// new client pay for a full sweep.
func (l *rateLimiter) dropBuckets(now time.Time) {
	for client, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Minutes()*l.perMinute >= l.perMinute {
			delete(l.buckets, client)
		}
	}
	for client := range l.buckets {
		if len(l.buckets) < maxBuckets*9/10 {
			break
		}
		delete(l.buckets, client)
	}
}

// clientAddr is the address of the client: the peer itself with no trusted
// proxy, else the X-Forwarded-For entry the outermost trusted proxy
// appended. Entries before it are whatever the client sent. An IPv6 client
// counts as its /64, which one host can fill with addresses.
func (l *rateLimiter) clientAddr(r *http.Request) string {
	addr, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		addr = r.RemoteAddr
	}
	if l.proxyHops > 0 {
		var hops []string
		for _, h := range r.Header.Values("X-Forwarded-For") {
			for _, hop := range strings.Split(h, ",") {
				hops = append(hops, strings.TrimSpace(hop))
			}
		}
		if len(hops) >= l.proxyHops {
			addr = hops[len(hops)-l.proxyHops]
		}
	}
	if ip, err := netip.ParseAddr(addr); err == nil && ip.Is6() && !ip.Is4In6() {
		prefix, _ := ip.Prefix(64)
		return prefix.String()
	}
	return addr
}
