// db.go holds every SQL statement the service runs, the schema step and the
// mapping of database errors to the service's errors.
//
// Reads run a constant number of statements whatever the page size: profiles,
// favorite flags and tags come back in the same row as the article.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/lib/pq"
)

//go:embed schema.sql
var schemaSQL string

// schemaLockID is the key of the advisory lock that serializes schema
// changes between instances booting at the same time.
const schemaLockID = 7_355_608

// applySchema runs schema.sql in one transaction holding an advisory lock:
// without the lock, concurrent CREATE ... IF NOT EXISTS statements race on
// the catalog and fail with unique violations. It records the hash of the
// schema it applied and skips a schema already applied: even a CREATE INDEX
// IF NOT EXISTS locks its table against writes, so re-running the DDL at
// every boot would stall the running instances' writes behind it.
func applySchema(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin schema transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, schemaLockID); err != nil {
		return fmt.Errorf("take schema lock: %w", err)
	}
	_, err = tx.ExecContext(ctx, `
		CREATE TABLE IF NOT EXISTS schema_applied (
			sha256     text PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`)
	if err != nil {
		return fmt.Errorf("create schema_applied: %w", err)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256([]byte(schemaSQL)))
	var applied bool
	err = tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM schema_applied WHERE sha256 = $1)`, sum).Scan(&applied)
	if err != nil {
		return fmt.Errorf("read schema_applied: %w", err)
	}
	if applied {
		return tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_applied (sha256) VALUES ($1)`, sum); err != nil {
		return fmt.Errorf("record schema: %w", err)
	}
	return tx.Commit()
}

// database wraps the pool with one method per query the handlers need.
type database struct {
	*sql.DB
}

type user struct {
	ID           int64
	Username     string
	Email        string
	PasswordHash string
	Bio          string
	Image        string
}

type profile struct {
	Username  string `json:"username"`
	Bio       string `json:"bio"`
	Image     string `json:"image"`
	Following bool   `json:"following"`
}

type article struct {
	Slug        string `json:"slug"`
	Title       string `json:"title"`
	Description string `json:"description"`
	// Body stays empty in lists: the spec's list items carry no body, and
	// validation never lets a stored body be empty.
	Body           string    `json:"body,omitempty"`
	TagList        []string  `json:"tagList"`
	CreatedAt      timestamp `json:"createdAt"`
	UpdatedAt      timestamp `json:"updatedAt"`
	Favorited      bool      `json:"favorited"`
	FavoritesCount int       `json:"favoritesCount"`
	Author         profile   `json:"author"`
}

type comment struct {
	ID        int64     `json:"id"`
	CreatedAt timestamp `json:"createdAt"`
	UpdatedAt timestamp `json:"updatedAt"`
	Body      string    `json:"body"`
	Author    profile   `json:"author"`
}

// timestamp encodes as RFC 3339 in UTC with milliseconds, the form the
// RealWorld clients and conformance suite expect.
type timestamp time.Time

func (t timestamp) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format("2006-01-02T15:04:05.000Z") + `"`), nil
}

// Users.

const userColumns = `id, username, email, password_hash, bio, image`

func scanUser(row interface{ Scan(...any) error }) (user, error) {
	var u user
	err := row.Scan(&u.ID, &u.Username, &u.Email, &u.PasswordHash, &u.Bio, &u.Image)
	return u, dbError(err)
}

func (db database) createUser(ctx context.Context, username, email, passwordHash string) (user, error) {
	return scanUser(db.QueryRowContext(ctx, `
		INSERT INTO users (username, email, password_hash)
		VALUES ($1, $2, $3)
		RETURNING `+userColumns,
		username, email, passwordHash))
}

func (db database) userByEmail(ctx context.Context, email string) (user, error) {
	return scanUser(db.QueryRowContext(ctx, `
		SELECT `+userColumns+`
		FROM users
		WHERE lower(email) = lower($1)`,
		email))
}

func (db database) userByID(ctx context.Context, id int64) (user, error) {
	return scanUser(db.QueryRowContext(ctx, `
		SELECT `+userColumns+`
		FROM users
		WHERE id = $1`,
		id))
}

// userChanges holds the fields a user update sets; nil leaves a field as it is.
type userChanges struct {
	Username     *string
	Email        *string
	PasswordHash *string
	Bio          *string
	Image        *string
}

func (db database) updateUser(ctx context.Context, id int64, c userChanges) (user, error) {
	return scanUser(db.QueryRowContext(ctx, `
		UPDATE users SET
			username      = coalesce($2, username),
			email         = coalesce($3, email),
			password_hash = coalesce($4, password_hash),
			bio           = coalesce($5, bio),
			image         = coalesce($6, image),
			updated_at    = now()
		WHERE id = $1
		RETURNING `+userColumns,
		id, c.Username, c.Email, c.PasswordHash, c.Bio, c.Image))
}

// Profiles.

func (db database) profile(ctx context.Context, viewerID int64, username string) (profile, error) {
	var p profile
	err := db.QueryRowContext(ctx, `
		SELECT
			u.username,
			u.bio,
			u.image,
			EXISTS (SELECT 1 FROM follows WHERE follower_id = $1 AND followed_id = u.id)
		FROM users u
		WHERE lower(u.username) = lower($2)`,
		viewerID, username).Scan(&p.Username, &p.Bio, &p.Image, &p.Following)
	return p, dbError(err)
}

// follow makes followerID follow username; following twice changes nothing.
func (db database) follow(ctx context.Context, followerID int64, username string) (profile, error) {
	var p profile
	var followedID int64
	err := db.QueryRowContext(ctx, `
		WITH target AS (
			SELECT id, username, bio, image
			FROM users
			WHERE lower(username) = lower($2)
		), inserted AS (
			INSERT INTO follows (follower_id, followed_id)
			SELECT $1, id FROM target WHERE id <> $1
			ON CONFLICT DO NOTHING
		)
		SELECT id, username, bio, image FROM target`,
		followerID, username).Scan(&followedID, &p.Username, &p.Bio, &p.Image)
	if err != nil {
		return profile{}, dbError(err)
	}
	if followedID == followerID {
		return profile{}, invalid("you cannot follow yourself")
	}
	p.Following = true
	return p, nil
}

// unfollow is idempotent like follow.
func (db database) unfollow(ctx context.Context, followerID int64, username string) (profile, error) {
	var p profile
	err := db.QueryRowContext(ctx, `
		WITH target AS (
			SELECT id, username, bio, image
			FROM users
			WHERE lower(username) = lower($2)
		), deleted AS (
			DELETE FROM follows
			WHERE follower_id = $1 AND followed_id IN (SELECT id FROM target)
		)
		SELECT username, bio, image FROM target`,
		followerID, username).Scan(&p.Username, &p.Bio, &p.Image)
	return p, dbError(err)
}

// Articles.

// articleFilter selects the articles of a list; zero fields do not filter.
type articleFilter struct {
	Tag         string
	Author      string
	FavoritedBy string
	FeedOf      int64 // the authors this user follows
	Limit       int
	Offset      int
}

// where returns the WHERE clause for f, appending its arguments to args so
// the placeholders number on from what args already holds.
func (f articleFilter) where(args *[]any) string {
	arg := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	conds := []string{"true"}
	if f.Tag != "" {
		conds = append(conds, `a.tags @> ARRAY[`+arg(f.Tag)+`::text]`)
	}
	if f.Author != "" {
		conds = append(conds, `a.author_id = (SELECT id FROM users WHERE lower(username) = lower(`+arg(f.Author)+`))`)
	}
	if f.FavoritedBy != "" {
		conds = append(conds, `a.id IN (
			SELECT article_id FROM favorites
			WHERE user_id = (SELECT id FROM users WHERE lower(username) = lower(`+arg(f.FavoritedBy)+`)))`)
	}
	if f.FeedOf != 0 {
		conds = append(conds, `a.author_id IN (SELECT followed_id FROM follows WHERE follower_id = `+arg(f.FeedOf)+`)`)
	}
	return strings.Join(conds, " AND ")
}

// articleSelect reads an article with its author's profile and the viewer's
// flags, as the viewer ($1; 0 for anonymous) sees it. withBody leaves the
// body out for lists, where it is the bulk of the row and is not sent.
func articleSelect(withBody bool) string {
	body := `''`
	if withBody {
		body = `a.body`
	}
	return `
		SELECT
			a.slug,
			a.title,
			a.description,
			` + body + `,
			a.tags,
			a.created_at,
			a.updated_at,
			a.favorites_count,
			EXISTS (SELECT 1 FROM favorites WHERE user_id = $1 AND article_id = a.id),
			u.username,
			u.bio,
			u.image,
			EXISTS (SELECT 1 FROM follows WHERE follower_id = $1 AND followed_id = u.id)
		FROM articles a
		JOIN users u ON u.id = a.author_id`
}

func scanArticle(row interface{ Scan(...any) error }) (article, error) {
	var a article
	var tags pq.StringArray
	var created, updated time.Time
	err := row.Scan(
		&a.Slug, &a.Title, &a.Description, &a.Body, &tags, &created, &updated,
		&a.FavoritesCount, &a.Favorited,
		&a.Author.Username, &a.Author.Bio, &a.Author.Image, &a.Author.Following)
	if err != nil {
		return article{}, dbError(err)
	}
	a.TagList = append([]string{}, tags...)
	a.CreatedAt, a.UpdatedAt = timestamp(created), timestamp(updated)
	return a, nil
}

// listArticles returns one page of the articles f selects, newest first, and
// the number of all articles it selects: two statements, whatever the page.
func (db database) listArticles(ctx context.Context, viewerID int64, f articleFilter) ([]article, int, error) {
	var countArgs []any
	countQuery := `SELECT count(*) FROM articles a WHERE ` + f.where(&countArgs)
	// All articles and a tag's articles are counted as they change (see
	// schema.sql): counting them here would read every one of them.
	page := articleFilter{Limit: f.Limit, Offset: f.Offset}
	switch f {
	case page:
		countQuery, countArgs = `SELECT articles FROM article_count`, nil
	case articleFilter{Tag: f.Tag, Limit: f.Limit, Offset: f.Offset}:
		countQuery = `SELECT coalesce((SELECT articles FROM tag_counts WHERE tag = $1), 0)`
	}
	var total int
	err := db.QueryRowContext(ctx, countQuery, countArgs...).Scan(&total)
	if err != nil {
		return nil, 0, dbError(err)
	}
	articles := []article{}
	if total <= f.Offset {
		return articles, total, nil
	}

	args := []any{viewerID}
	where := f.where(&args)
	args = append(args, f.Limit, f.Offset)
	rows, err := db.QueryContext(ctx, articleSelect(false)+`
		WHERE `+where+`
		ORDER BY a.id DESC
		LIMIT $`+strconv.Itoa(len(args)-1)+` OFFSET $`+strconv.Itoa(len(args)),
		args...)
	if err != nil {
		return nil, 0, dbError(err)
	}
	defer rows.Close()
	for rows.Next() {
		a, err := scanArticle(rows)
		if err != nil {
			return nil, 0, err
		}
		articles = append(articles, a)
	}
	return articles, total, dbError(rows.Err())
}

func (db database) articleBySlug(ctx context.Context, viewerID int64, slug string) (article, error) {
	return scanArticle(db.QueryRowContext(ctx, articleSelect(true)+`
		WHERE a.slug = $2`,
		viewerID, slug))
}

// articleAuthor returns the id and author of the article at slug, for the
// checks that precede a change.
func (db database) articleAuthor(ctx context.Context, slug string) (id, authorID int64, err error) {
	err = db.QueryRowContext(ctx, `
		SELECT id, author_id
		FROM articles
		WHERE slug = $1`,
		slug).Scan(&id, &authorID)
	return id, authorID, dbError(err)
}

type articleFields struct {
	Title       string
	Description string
	Body        string
	Tags        []string
}

// createArticle stores a new article under a slug made from its title and
// returns that slug.
func (db database) createArticle(ctx context.Context, authorID int64, f articleFields) (string, error) {
	return withUniqueSlug(slugify(f.Title), func(slug string) error {
		_, err := db.ExecContext(ctx, `
			INSERT INTO articles (slug, title, description, body, tags, author_id)
			VALUES ($1, $2, $3, $4, $5, $6)`,
			slug, f.Title, f.Description, f.Body, pq.StringArray(f.Tags), authorID)
		return err
	})
}

// articleChanges holds the fields an update sets; nil leaves a field as it is.
type articleChanges struct {
	Title       *string
	Description *string
	Body        *string
	Tags        *[]string
}

// updateArticle applies c to the article id and returns its slug, which
// follows the title when the title changes.
func (db database) updateArticle(ctx context.Context, id int64, currentSlug string, c articleChanges) (string, error) {
	var tags any // NULL keeps the stored tags
	if c.Tags != nil {
		tags = pq.StringArray(*c.Tags)
	}
	base := currentSlug
	if c.Title != nil && !slugFits(currentSlug, slugify(*c.Title)) {
		base = slugify(*c.Title)
	}
	return withUniqueSlug(base, func(slug string) error {
		res, err := db.ExecContext(ctx, `
			UPDATE articles SET
				slug        = $2,
				title       = coalesce($3, title),
				description = coalesce($4, description),
				body        = coalesce($5, body),
				tags        = coalesce($6, tags),
				updated_at  = now()
			WHERE id = $1`,
			id, slug, c.Title, c.Description, c.Body, tags)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errNotFound
		}
		return nil
	})
}

func (db database) deleteArticle(ctx context.Context, id int64) error {
	_, err := db.ExecContext(ctx, `DELETE FROM articles WHERE id = $1`, id)
	return dbError(err)
}

// favorite records that userID favorites the article at slug and counts it,
// in one statement so the count stays exact under concurrent favorites.
// Favoriting twice changes nothing.
func (db database) favorite(ctx context.Context, userID int64, slug string) error {
	return db.execOnArticle(ctx, `
		WITH target AS (
			SELECT id FROM articles WHERE slug = $2
		), inserted AS (
			INSERT INTO favorites (user_id, article_id)
			SELECT $1, id FROM target
			ON CONFLICT DO NOTHING
			RETURNING article_id
		), counted AS (
			UPDATE articles SET favorites_count = favorites_count + 1
			WHERE id IN (SELECT article_id FROM inserted)
		)
		SELECT id FROM target`,
		userID, slug)
}

// unfavorite is favorite's inverse, idempotent in the same way.
func (db database) unfavorite(ctx context.Context, userID int64, slug string) error {
	return db.execOnArticle(ctx, `
		WITH target AS (
			SELECT id FROM articles WHERE slug = $2
		), deleted AS (
			DELETE FROM favorites
			WHERE user_id = $1 AND article_id IN (SELECT id FROM target)
			RETURNING article_id
		), counted AS (
			UPDATE articles SET favorites_count = favorites_count - 1
			WHERE id IN (SELECT article_id FROM deleted)
		)
		SELECT id FROM target`,
		userID, slug)
}

// execOnArticle runs a statement that returns the id of the article it
// acted on, turning no row into errNotFound.
func (db database) execOnArticle(ctx context.Context, query string, args ...any) error {
	var id int64
	return dbError(db.QueryRowContext(ctx, query, args...).Scan(&id))
}

// maxTags bounds the tag list: the most used tags come first.
const maxTags = 100

func (db database) tags(ctx context.Context) ([]string, error) {
	rows, err := db.QueryContext(ctx, `
		SELECT tag
		FROM tag_counts
		WHERE articles > 0
		ORDER BY articles DESC, tag
		LIMIT $1`,
		maxTags)
	if err != nil {
		return nil, dbError(err)
	}
	defer rows.Close()
	tags := []string{}
	for rows.Next() {
		var tag string
		if err := rows.Scan(&tag); err != nil {
			return nil, dbError(err)
		}
		tags = append(tags, tag)
	}
	return tags, dbError(rows.Err())
}

// Comments.

func (db database) comments(ctx context.Context, viewerID int64, slug string) ([]comment, error) {
	var articleID int64
	err := db.QueryRowContext(ctx, `SELECT id FROM articles WHERE slug = $1`, slug).Scan(&articleID)
	if err != nil {
		return nil, dbError(err)
	}
	rows, err := db.QueryContext(ctx, `
		SELECT
			c.id,
			c.created_at,
			c.updated_at,
			c.body,
			u.username,
			u.bio,
			u.image,
			EXISTS (SELECT 1 FROM follows WHERE follower_id = $1 AND followed_id = u.id)
		FROM comments c
		JOIN users u ON u.id = c.author_id
		WHERE c.article_id = $2
		ORDER BY c.id`,
		viewerID, articleID)
	if err != nil {
		return nil, dbError(err)
	}
	defer rows.Close()
	comments := []comment{}
	for rows.Next() {
		var c comment
		var created, updated time.Time
		err := rows.Scan(&c.ID, &created, &updated, &c.Body,
			&c.Author.Username, &c.Author.Bio, &c.Author.Image, &c.Author.Following)
		if err != nil {
			return nil, dbError(err)
		}
		c.CreatedAt, c.UpdatedAt = timestamp(created), timestamp(updated)
		comments = append(comments, c)
	}
	return comments, dbError(rows.Err())
}

func (db database) addComment(ctx context.Context, authorID int64, slug, body string) (comment, error) {
	var c comment
	var created, updated time.Time
	err := db.QueryRowContext(ctx, `
		WITH inserted AS (
			INSERT INTO comments (article_id, author_id, body)
			SELECT id, $1, $3 FROM articles WHERE slug = $2
			RETURNING id, created_at, updated_at, body
		)
		SELECT i.id, i.created_at, i.updated_at, i.body, u.username, u.bio, u.image
		FROM inserted i, users u
		WHERE u.id = $1`,
		authorID, slug, body).Scan(&c.ID, &created, &updated, &c.Body,
		&c.Author.Username, &c.Author.Bio, &c.Author.Image)
	c.CreatedAt, c.UpdatedAt = timestamp(created), timestamp(updated)
	return c, dbError(err)
}

// commentAuthor returns the author of comment id under the article at slug;
// a comment under another article is not found.
func (db database) commentAuthor(ctx context.Context, slug string, id int64) (int64, error) {
	var authorID int64
	err := db.QueryRowContext(ctx, `
		SELECT c.author_id
		FROM comments c
		JOIN articles a ON a.id = c.article_id
		WHERE a.slug = $1 AND c.id = $2`,
		slug, id).Scan(&authorID)
	return authorID, dbError(err)
}

func (db database) deleteComment(ctx context.Context, id int64) error {
	_, err := db.ExecContext(ctx, `DELETE FROM comments WHERE id = $1`, id)
	return dbError(err)
}

// Slugs.

// slugify makes a readable URL segment of a title: lower-case letters and
// digits of any script joined by single hyphens.
func slugify(title string) string {
	var b strings.Builder
	hyphen := false
	for _, r := range strings.ToLower(title) {
		if isSlugRune(r) {
			if hyphen && b.Len() > 0 {
				b.WriteByte('-')
			}
			hyphen = false
			b.WriteRune(r)
			if b.Len() >= maxSlugBase {
				break
			}
		} else {
			hyphen = true
		}
	}
	if b.Len() == 0 {
		return "article"
	}
	return b.String()
}

// maxSlugBase bounds the slug made from a long title, in bytes.
const maxSlugBase = 80

func isSlugRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' ||
		r > unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))
}

// slugFits reports whether slug was made from base, with or without the
// suffix added on a collision, so an unchanged title keeps its slug.
func slugFits(slug, base string) bool {
	if slug == base {
		return true
	}
	suffix, ok := strings.CutPrefix(slug, base+"-")
	return ok && len(suffix) == slugSuffixLen
}

const slugSuffixLen = 6

// withUniqueSlug calls write with base and, while the slug is taken, with
// base plus a random suffix; it returns the slug that was written.
func withUniqueSlug(base string, write func(slug string) error) (string, error) {
	slug := base
	for range 5 {
		err := write(slug)
		if !isUniqueViolation(err, "articles_slug_key") {
			return slug, dbError(err)
		}
		slug = base + "-" + randomSuffix()
	}
	return "", errors.New("no free slug after 5 attempts")
}

func randomSuffix() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, slugSuffixLen)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// Errors.

// dbError maps database errors to the service's: no row is errNotFound, a
// taken username or email is a validation error naming the field, a row
// that refers to a user or article deleted meanwhile is errUnauthorized or
// errNotFound, a value PostgreSQL cannot store is a validation error, and a
// database that cannot answer is errUnavailable.
func dbError(err error) error {
	var pqErr *pq.Error
	errors.As(err, &pqErr)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return errNotFound
	case isUniqueViolation(err, "users_username_key"):
		return invalid("username has already been taken")
	case isUniqueViolation(err, "users_email_key"):
		return invalid("email has already been taken")
	case pqErr != nil && pqErr.Code == "23503": // foreign key violation
		// The acting user's token outlived the user, or the article or
		// followed user went away during the request.
		if strings.HasSuffix(pqErr.Constraint, "_article_id_fkey") || pqErr.Constraint == "follows_followed_id_fkey" {
			return errNotFound
		}
		return errUnauthorized
	case pqErr != nil && pqErr.Code.Class() == "22": // data exception, such as a NUL character
		return invalid("the request holds a value that cannot be stored, such as a NUL character")
	case isUnavailable(err):
		return fmt.Errorf("%w: %w", errUnavailable, err)
	}
	return err
}

func isUniqueViolation(err error, constraint string) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "23505" && pqErr.Constraint == constraint
}

// isUnavailable reports whether err means the database could not answer in
// time (down, restarting, out of connections, too slow), as opposed to a
// query it answered with an error.
func isUnavailable(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch {
		case pqErr.Code.Class() == "08", // connection exception
			pqErr.Code == "53300",      // too many connections
			pqErr.Code == "57014",      // query canceled: the statement timeout
			pqErr.Code.Class() == "57": // the server is shutting down or starting
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) ||
		errors.As(err, &netErr)
}
