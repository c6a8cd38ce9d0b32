-- The whole schema. It is applied on every boot under an advisory lock, so
-- every statement must be idempotent, and changes must stay additive.

CREATE TABLE IF NOT EXISTS users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL,
    email         text NOT NULL,
    password_hash text NOT NULL,
    bio           text NOT NULL DEFAULT '',
    image         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Usernames and emails are unique regardless of case; lookups use the same
-- expressions so they are served by these indexes.
CREATE UNIQUE INDEX IF NOT EXISTS users_username_key ON users (lower(username));
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));

CREATE TABLE IF NOT EXISTS follows (
    follower_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    followed_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (follower_id, followed_id)
);

-- Tags live in the article row: reading an article needs no join, and the GIN
-- index serves the tag filter. favorites_count is kept in step with the
-- favorites table in the same statement that changes it.
CREATE TABLE IF NOT EXISTS articles (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug            text NOT NULL,
    title           text NOT NULL,
    description     text NOT NULL,
    body            text NOT NULL,
    tags            text[] NOT NULL DEFAULT '{}',
    author_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    favorites_count integer NOT NULL DEFAULT 0 CHECK (favorites_count >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS articles_slug_key ON articles (slug);
CREATE INDEX IF NOT EXISTS articles_author_idx ON articles (author_id, id);
CREATE INDEX IF NOT EXISTS articles_tags_idx ON articles USING gin (tags);

CREATE TABLE IF NOT EXISTS favorites (
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    article_id bigint NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, article_id)
);

-- Deleting an article cascades to its favorites through this index.
CREATE INDEX IF NOT EXISTS favorites_article_idx ON favorites (article_id);

CREATE TABLE IF NOT EXISTS comments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    article_id bigint NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    author_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS comments_article_idx ON comments (article_id, id);
