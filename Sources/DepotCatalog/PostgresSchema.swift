import DepotCore
import Foundation

/// The catalog's schema in PostgreSQL. SQLite's catalog grew by eleven migrations
/// (`Schema.migrations`); a PostgreSQL catalog starts at their end state in one step, and every
/// later migration is written twice, once per engine, with the same version number, so one
/// version means one set of tables and columns whichever engine holds them (a test compares the
/// two lists' lengths and the columns of every table).
///
/// Types: INTEGER → BIGINT (SQLite's integers are 64-bit), BLOB → BYTEA, ids that SQLite assigned
/// as rowids → identity columns. `store_counters` is sharded: every replica's writers update the
/// row of their own shard, so the one-row hot spot SQLite could afford (one writer) does not
/// serialize writers across replicas; readers sum the shards. `catalog_sequences` replaces
/// `sqlite_sequence` for the ids that must be gapless and never reused (the audit chain, the
/// events cursor): transactional, and its row lock orders appenders in commit order.
enum PostgresSchema {
    static let steps: [(version: Int64, sql: String)] = [
        (11, baseline), (12, uploadSessions), (13, artifactFacts), (14, digestBytes), (15, casts), (16, chunkCounters),
    ]

    /// Migration 16 (`Schema.migrations[15]`): chunk rows inserted or updated are counted once
    /// per statement, as migration 12 did for deletions. A group commit inserts thousands of
    /// chunk rows in one transaction, and a compaction relocates as many (an upsert: an UPDATE
    /// of every row, even with the lengths unchanged); a row trigger updated the shard's counter
    /// row once or twice per chunk, each update walking the versions the transaction had made
    /// of that row before it: quadratic. Measured: committing 21,340 relocated chunks took 16 s
    /// of a 17 s GC. (Transition tables exclude a column list, so the UPDATE trigger fires for
    /// every UPDATE of chunks and leaves the counters alone when no length changed.)
    static let chunkCounters = """
        DROP TRIGGER store_counters_chunks ON chunks;
        DROP FUNCTION store_counters_chunks();
        CREATE FUNCTION store_counters_chunks_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE store_counters SET chunks = chunks + d.n, chunk_raw_bytes = chunk_raw_bytes + d.raw,
                chunk_stored_bytes = chunk_stored_bytes + d.stored
            FROM (SELECT COUNT(*) AS n, COALESCE(SUM(raw_length), 0) AS raw, COALESCE(SUM(stored_length), 0) AS stored
                  FROM new_chunks) d
            WHERE id = store_counters_shard() AND d.n > 0;
            RETURN NULL;
        END $$;
        CREATE TRIGGER store_counters_chunks_inserted AFTER INSERT ON chunks REFERENCING NEW TABLE AS new_chunks
            FOR EACH STATEMENT EXECUTE FUNCTION store_counters_chunks_inserted();
        CREATE FUNCTION store_counters_chunks_updated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE store_counters SET chunk_raw_bytes = chunk_raw_bytes + d.raw, chunk_stored_bytes = chunk_stored_bytes + d.stored
            FROM (SELECT (SELECT COALESCE(SUM(raw_length), 0) FROM new_chunks) - (SELECT COALESCE(SUM(raw_length), 0) FROM old_chunks) AS raw,
                         (SELECT COALESCE(SUM(stored_length), 0) FROM new_chunks)
                             - (SELECT COALESCE(SUM(stored_length), 0) FROM old_chunks) AS stored) d
            WHERE id = store_counters_shard() AND (d.raw <> 0 OR d.stored <> 0);
            RETURN NULL;
        END $$;
        CREATE TRIGGER store_counters_chunks_updated AFTER UPDATE ON chunks
            REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
            FOR EACH STATEMENT EXECUTE FUNCTION store_counters_chunks_updated();
        """

    /// Migration 15 (`Schema.migrations[14]`): cast-aware deduplication (see there).
    static let casts = """
        CREATE TABLE chunk_casts(
            hash BYTEA PRIMARY KEY,
            raw_length BIGINT NOT NULL,
            kind BIGINT NOT NULL,
            skip BIGINT NOT NULL,
            source_offset BIGINT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE chunk_cast_sources(
            hash BYTEA NOT NULL,
            seq BIGINT NOT NULL,
            source_hash BYTEA NOT NULL,
            PRIMARY KEY(hash, seq)
        );
        CREATE INDEX chunk_cast_sources_by_source ON chunk_cast_sources(source_hash);
        CREATE TABLE tensor_prints(
            print BYTEA NOT NULL,
            blob_id BIGINT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
            data_offset BIGINT NOT NULL,
            source BIGINT NOT NULL,
            PRIMARY KEY(print, blob_id, data_offset)
        );
        CREATE INDEX tensor_prints_by_blob ON tensor_prints(blob_id);
        ALTER TABLE blobs ADD COLUMN casts_scanned BIGINT NOT NULL DEFAULT 0;
        CREATE INDEX blobs_cast_unscanned ON blobs(id) WHERE casts_scanned = 0;
        """

    /// Migration 14 (`Schema.migrations[13]`): the feature tables' digests become the 32 bytes
    /// every other digest column holds (see there); text that is not a digest becomes its UTF-8
    /// bytes, as in SQLite. PostgreSQL changes the types in place and rebuilds the indexes.
    static let digestBytes = """
        CREATE FUNCTION depot_digest_bytes(t TEXT) RETURNS BYTEA LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE WHEN t ~ '^sha256:[0-9a-f]{64}$' THEN decode(substr(t, 8), 'hex') ELSE convert_to(t, 'UTF8') END
        $$;
        ALTER TABLE pipeline_runs ALTER COLUMN trigger_digest TYPE BYTEA USING depot_digest_bytes(trigger_digest);
        ALTER TABLE jobs ALTER COLUMN input_digest TYPE BYTEA USING depot_digest_bytes(input_digest),
            ALTER COLUMN output_digest TYPE BYTEA USING depot_digest_bytes(output_digest),
            ALTER COLUMN log_digest TYPE BYTEA USING depot_digest_bytes(log_digest);
        ALTER TABLE job_outputs ALTER COLUMN digest TYPE BYTEA USING depot_digest_bytes(digest);
        ALTER TABLE deployments ALTER COLUMN stable_digest TYPE BYTEA USING depot_digest_bytes(stable_digest),
            ALTER COLUMN canary_digest TYPE BYTEA USING depot_digest_bytes(canary_digest);
        ALTER TABLE deployment_versions ALTER COLUMN digest TYPE BYTEA USING depot_digest_bytes(digest);
        ALTER TABLE rollouts ALTER COLUMN stable_digest TYPE BYTEA USING depot_digest_bytes(stable_digest),
            ALTER COLUMN canary_digest TYPE BYTEA USING depot_digest_bytes(canary_digest);
        ALTER TABLE deployment_nodes ALTER COLUMN digest TYPE BYTEA USING depot_digest_bytes(digest);
        ALTER TABLE served_intervals ALTER COLUMN digest TYPE BYTEA USING depot_digest_bytes(digest);
        DROP FUNCTION depot_digest_bytes(TEXT);
        """

    /// Migration 13 (`Schema.migrations[12]`): search facts (see there).
    static let artifactFacts = """
        CREATE TABLE artifact_facts(
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            repo_id BIGINT NOT NULL,
            digest BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY(key, value, repo_id, digest)
        );
        CREATE INDEX artifact_facts_by_manifest ON artifact_facts(repo_id, digest);
        CREATE INDEX artifact_facts_by_time ON artifact_facts(key, value, created_at, repo_id, digest);
        CREATE INDEX manifests_by_time ON manifests(created_at, repo_id, digest);
        CREATE INDEX manifests_by_repository_time ON manifests(repo_id, created_at, digest);
        -- Referrers by subject: only manifests that have one. With every other manifest's NULL
        -- in it, the full index looked unselective to SQLite's statistics (ANALYZE), which then
        -- scanned the whole repository for each referrers query (28 ms at 100,000 manifests).
        DROP INDEX manifests_by_subject;
        CREATE INDEX manifests_by_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
        """

    /// Migration 12 (`Schema.migrations[11]`): upload sessions and chunk proofs; in PostgreSQL
    /// only, chunk deletions counted once per statement.
    static let uploadSessions = """
        CREATE TABLE upload_sessions(
            id TEXT PRIMARY KEY,
            repository TEXT NOT NULL,
            client TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            bytes BIGINT NOT NULL,
            writer_state BYTEA,
            holder TEXT,
            held_until BIGINT
        );
        CREATE INDEX upload_sessions_by_client ON upload_sessions(client);
        CREATE TABLE upload_segments(
            session_id TEXT NOT NULL,
            first_byte BIGINT NOT NULL,
            end_byte BIGINT NOT NULL,
            blob_id BIGINT NOT NULL,
            PRIMARY KEY(session_id, first_byte)
        );
        CREATE INDEX upload_segments_by_blob ON upload_segments(blob_id);
        CREATE TABLE chunk_proofs(
            principal TEXT NOT NULL,
            hash BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY(principal, hash)
        );
        CREATE INDEX chunk_proofs_by_age ON chunk_proofs(created_at);

        -- GC deletes tens of thousands of chunks in one statement. A row trigger updating one
        -- counter row per deleted chunk makes as many versions of that row in one transaction,
        -- each update walking the chain of the ones before: quadratic (55 s for 54,543 chunks,
        -- measured). One update per statement instead, from the statement's deleted rows.
        DROP TRIGGER store_counters_chunks ON chunks;
        CREATE TRIGGER store_counters_chunks AFTER INSERT OR UPDATE OF raw_length, stored_length ON chunks
            FOR EACH ROW EXECUTE FUNCTION store_counters_chunks();
        CREATE FUNCTION store_counters_chunks_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE store_counters SET chunks = chunks - d.n, chunk_raw_bytes = chunk_raw_bytes - d.raw,
                chunk_stored_bytes = chunk_stored_bytes - d.stored
            FROM (SELECT COUNT(*) AS n, COALESCE(SUM(raw_length), 0) AS raw, COALESCE(SUM(stored_length), 0) AS stored
                  FROM deleted_chunks) d
            WHERE id = store_counters_shard() AND d.n > 0;
            RETURN NULL;
        END $$;
        CREATE TRIGGER store_counters_chunks_deleted AFTER DELETE ON chunks REFERENCING OLD TABLE AS deleted_chunks
            FOR EACH STATEMENT EXECUTE FUNCTION store_counters_chunks_deleted();
        """

    /// The version the catalog is at; 0 when it has no tables yet.
    static func version(_ conn: any CatalogConnection) throws -> Int64 {
        let exists = try conn.first("SELECT to_regclass('depot_schema') IS NOT NULL") { $0.int(0) } ?? 0
        guard exists != 0 else { return 0 }
        return try conn.first("SELECT COALESCE(MAX(version), 0) FROM depot_schema") { $0.int(0) } ?? 0
    }

    /// Brings the catalog to the newest version. Replicas starting together serialize on a lock:
    /// one migrates, the others then find the new version.
    static func migrate(_ conn: any CatalogConnection, upTo target: Int64 = .max) throws {
        try conn.transaction {
            // A long migration on another replica is waited out, however long it takes.
            try conn.execute("SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0")
            try conn.lock(.migrations)
            let current = try version(conn)
            let known = steps.last!.version
            if current > known {
                throw DepotError.storage(
                    "catalog \(conn.location) has schema version \(current), newer than this build understands (\(known)); upgrade depot")
            }
            if current != 0 && current < steps.first!.version {
                throw DepotError.storage(
                    "catalog \(conn.location) has schema version \(current), which no build of Depot wrote to PostgreSQL")
            }
            if current == 0, let pg = conn as? PostgresConnection {
                try conn.execute("CREATE SCHEMA IF NOT EXISTS \"\(pg.schema)\"")
            }
            for step in steps where step.version > current && step.version <= target {
                try conn.execute(step.sql)
                try conn.run(
                    "INSERT INTO depot_schema(version, applied_at) VALUES(?, ?)", .int(step.version),
                    .int(Int64(Date().timeIntervalSince1970 * 1000)))
            }
        }
    }

    static let baseline = """
        CREATE TABLE depot_schema(version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);
        CREATE TABLE catalog_sequences(name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
        INSERT INTO catalog_sequences VALUES ('audit_log', 0), ('events', 0);

        CREATE TABLE packs(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            committed_size BIGINT NOT NULL DEFAULT 0,
            sealed BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE chunks(
            hash BYTEA PRIMARY KEY,
            pack_id BIGINT NOT NULL REFERENCES packs(id),
            "offset" BIGINT NOT NULL,
            stored_length BIGINT NOT NULL,
            raw_length BIGINT NOT NULL,
            codec BIGINT NOT NULL
        );
        CREATE INDEX chunks_by_pack ON chunks(pack_id, "offset");
        CREATE TABLE blobs(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            digest BYTEA UNIQUE,
            size BIGINT NOT NULL DEFAULT 0,
            chunker TEXT NOT NULL,
            state BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE TABLE recipes(
            blob_id BIGINT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
            "offset" BIGINT NOT NULL,
            length BIGINT NOT NULL,
            chunk_hash BYTEA NOT NULL,
            PRIMARY KEY(blob_id, "offset")
        );
        CREATE INDEX recipes_by_chunk ON recipes(chunk_hash);
        CREATE TABLE blob_roots(
            digest BYTEA PRIMARY KEY,
            reason TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );

        CREATE TABLE repositories(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            name TEXT UNIQUE NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE repository_blobs(
            repo_id BIGINT NOT NULL REFERENCES repositories(id),
            digest BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY(repo_id, digest)
        );
        CREATE TABLE manifests(
            repo_id BIGINT NOT NULL REFERENCES repositories(id),
            digest BYTEA NOT NULL,
            media_type TEXT NOT NULL,
            artifact_type TEXT,
            subject BYTEA,
            annotations TEXT,
            content BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY(repo_id, digest)
        );
        CREATE INDEX manifests_by_subject ON manifests(repo_id, subject);
        CREATE TABLE manifest_refs(
            repo_id BIGINT NOT NULL,
            manifest BYTEA NOT NULL,
            child BYTEA NOT NULL,
            kind BIGINT NOT NULL,
            PRIMARY KEY(repo_id, manifest, child, kind)
        );
        CREATE INDEX manifest_refs_by_child ON manifest_refs(child, kind, repo_id);
        CREATE TABLE tags(
            repo_id BIGINT NOT NULL REFERENCES repositories(id),
            name TEXT NOT NULL,
            digest BYTEA NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY(repo_id, name)
        );
        CREATE INDEX tags_by_digest ON tags(repo_id, digest);
        CREATE TABLE tag_journal(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            repo_id BIGINT NOT NULL,
            tag TEXT NOT NULL,
            from_digest BYTEA,
            to_digest BYTEA,
            actor TEXT NOT NULL,
            reason TEXT,
            at BIGINT NOT NULL
        );
        CREATE INDEX tag_journal_by_tag ON tag_journal(repo_id, tag, id);

        CREATE TABLE manifest_metadata(
            digest BYTEA PRIMARY KEY,
            json TEXT NOT NULL
        );

        CREATE TABLE lineage_edges(
            child BYTEA NOT NULL,
            parent BYTEA NOT NULL,
            relation TEXT NOT NULL,
            parent_ref TEXT NOT NULL,
            repo_id BIGINT NOT NULL,
            run TEXT, dataset TEXT, source_commit TEXT, metrics TEXT, job TEXT,
            created_at BIGINT NOT NULL,
            verified_job BIGINT,
            PRIMARY KEY(child, parent, relation)
        );
        CREATE INDEX lineage_by_parent ON lineage_edges(parent, child);
        CREATE INDEX manifests_by_digest ON manifests(digest);
        CREATE TABLE pins(
            digest BYTEA PRIMARY KEY,
            repo_id BIGINT NOT NULL,
            reason TEXT,
            actor TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE audit_log(
            id BIGINT PRIMARY KEY,
            at BIGINT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            repository TEXT,
            digest TEXT,
            tag TEXT,
            details TEXT,
            prev_hash BYTEA NOT NULL,
            hash BYTEA NOT NULL
        );
        CREATE INDEX audit_by_time ON audit_log(at);
        CREATE INDEX audit_by_repository ON audit_log(repository, at);

        CREATE TABLE events(
            id BIGINT PRIMARY KEY,
            at BIGINT NOT NULL,
            type TEXT NOT NULL,
            repository TEXT,
            payload TEXT NOT NULL
        );
        CREATE TABLE webhook_cursors(
            webhook TEXT PRIMARY KEY,
            last_event BIGINT NOT NULL
        );
        CREATE TABLE webhook_deliveries(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            webhook TEXT NOT NULL,
            event_id BIGINT NOT NULL,
            attempt BIGINT NOT NULL,
            at BIGINT NOT NULL,
            status BIGINT,
            error TEXT,
            duration_ms BIGINT NOT NULL,
            outcome TEXT NOT NULL
        );
        CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries(webhook, id);

        CREATE TABLE pipeline_runs(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            pipeline TEXT NOT NULL,
            repository TEXT NOT NULL,
            trigger_digest TEXT NOT NULL,
            trigger_tag TEXT,
            event_id BIGINT,
            created_at BIGINT NOT NULL,
            UNIQUE(pipeline, repository, trigger_digest)
        );
        CREATE TABLE jobs(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            run_id BIGINT NOT NULL REFERENCES pipeline_runs(id),
            pipeline TEXT NOT NULL,
            stage TEXT NOT NULL,
            kind TEXT NOT NULL,
            spec TEXT NOT NULL,
            state TEXT NOT NULL,
            input_repository TEXT NOT NULL,
            input_digest TEXT NOT NULL,
            input_tag TEXT,
            output_tag TEXT,
            labels TEXT NOT NULL DEFAULT '',
            attempt BIGINT NOT NULL DEFAULT 0,
            max_attempts BIGINT NOT NULL,
            timeout_ms BIGINT NOT NULL,
            not_before BIGINT NOT NULL DEFAULT 0,
            runner TEXT,
            lease_token TEXT,
            lease_expires BIGINT,
            job_key TEXT,
            output_digest TEXT,
            memoized BIGINT NOT NULL DEFAULT 0,
            log_digest TEXT,
            reason TEXT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            started_at BIGINT,
            finished_at BIGINT,
            UNIQUE(run_id, stage)
        );
        CREATE INDEX jobs_by_state ON jobs(state, kind, id);
        CREATE INDEX jobs_by_pipeline ON jobs(pipeline, id);
        CREATE TABLE job_outputs(
            job_key TEXT PRIMARY KEY,
            repository TEXT NOT NULL,
            digest TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE INDEX job_outputs_by_digest ON job_outputs(digest);

        CREATE TABLE deployments(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            repository TEXT NOT NULL,
            environment TEXT NOT NULL,
            model_name TEXT NOT NULL,
            stable_digest TEXT,
            canary_digest TEXT,
            weight BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            UNIQUE(repository, environment)
        );
        CREATE TABLE deployment_versions(
            deployment_id BIGINT NOT NULL,
            digest TEXT NOT NULL,
            version BIGINT NOT NULL,
            PRIMARY KEY(deployment_id, digest),
            UNIQUE(deployment_id, version)
        );
        CREATE TABLE rollouts(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            deployment_id BIGINT NOT NULL,
            stable_digest TEXT,
            canary_digest TEXT NOT NULL,
            state TEXT NOT NULL,
            steps TEXT NOT NULL,
            step_index BIGINT NOT NULL,
            weight BIGINT NOT NULL,
            analysis_ms BIGINT NOT NULL,
            step_started_at BIGINT NOT NULL,
            failures TEXT NOT NULL DEFAULT '{}',
            started_by TEXT NOT NULL,
            job_id BIGINT,
            reason TEXT,
            created_at BIGINT NOT NULL,
            finished_at BIGINT
        );
        CREATE UNIQUE INDEX one_active_rollout ON rollouts(deployment_id) WHERE state IN ('running', 'paused');
        CREATE TABLE rollout_decisions(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            rollout_id BIGINT NOT NULL,
            at BIGINT NOT NULL,
            step_index BIGINT NOT NULL,
            weight BIGINT NOT NULL,
            decision TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT,
            measurements TEXT
        );
        CREATE INDEX rollout_decisions_by_rollout ON rollout_decisions(rollout_id, id);
        CREATE TABLE deployment_nodes(
            deployment_id BIGINT NOT NULL,
            node TEXT NOT NULL,
            digest TEXT,
            version BIGINT,
            state TEXT,
            reason TEXT,
            seen_at BIGINT NOT NULL,
            reported_at BIGINT,
            PRIMARY KEY(deployment_id, node)
        );
        CREATE TABLE served_intervals(
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            deployment_id BIGINT NOT NULL,
            digest TEXT NOT NULL,
            role TEXT NOT NULL,
            weight BIGINT NOT NULL,
            from_at BIGINT NOT NULL,
            to_at BIGINT
        );
        CREATE INDEX served_by_digest ON served_intervals(digest, from_at);

        CREATE TABLE store_counters(
            id BIGINT PRIMARY KEY,
            blobs BIGINT NOT NULL DEFAULT 0, logical_bytes BIGINT NOT NULL DEFAULT 0, writing BIGINT NOT NULL DEFAULT 0,
            chunks BIGINT NOT NULL DEFAULT 0, chunk_raw_bytes BIGINT NOT NULL DEFAULT 0, chunk_stored_bytes BIGINT NOT NULL DEFAULT 0,
            packs BIGINT NOT NULL DEFAULT 0, pack_bytes BIGINT NOT NULL DEFAULT 0
        );
        INSERT INTO store_counters(id) SELECT generate_series(1, 16);
        CREATE FUNCTION store_counters_shard() RETURNS BIGINT LANGUAGE sql AS 'SELECT (pg_backend_pid() % 16 + 1)::BIGINT';
        CREATE FUNCTION store_counters_blobs() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE store_counters SET blobs = blobs - (OLD.state = 1)::int,
                    logical_bytes = logical_bytes - (CASE WHEN OLD.state = 1 THEN OLD.size ELSE 0 END),
                    writing = writing - (OLD.state = 0)::int
                WHERE id = store_counters_shard();
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') THEN
                UPDATE store_counters SET blobs = blobs + (NEW.state = 1)::int,
                    logical_bytes = logical_bytes + (CASE WHEN NEW.state = 1 THEN NEW.size ELSE 0 END),
                    writing = writing + (NEW.state = 0)::int
                WHERE id = store_counters_shard();
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER store_counters_blobs AFTER INSERT OR DELETE OR UPDATE OF state, size ON blobs
            FOR EACH ROW EXECUTE FUNCTION store_counters_blobs();
        CREATE FUNCTION store_counters_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE store_counters SET chunks = chunks - 1, chunk_raw_bytes = chunk_raw_bytes - OLD.raw_length,
                    chunk_stored_bytes = chunk_stored_bytes - OLD.stored_length
                WHERE id = store_counters_shard();
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') THEN
                UPDATE store_counters SET chunks = chunks + 1, chunk_raw_bytes = chunk_raw_bytes + NEW.raw_length,
                    chunk_stored_bytes = chunk_stored_bytes + NEW.stored_length
                WHERE id = store_counters_shard();
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER store_counters_chunks AFTER INSERT OR DELETE OR UPDATE OF raw_length, stored_length ON chunks
            FOR EACH ROW EXECUTE FUNCTION store_counters_chunks();
        CREATE FUNCTION store_counters_packs() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE store_counters SET packs = packs - 1, pack_bytes = pack_bytes - OLD.committed_size
                WHERE id = store_counters_shard();
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') THEN
                UPDATE store_counters SET packs = packs + 1, pack_bytes = pack_bytes + NEW.committed_size
                WHERE id = store_counters_shard();
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER store_counters_packs AFTER INSERT OR DELETE OR UPDATE OF committed_size ON packs
            FOR EACH ROW EXECUTE FUNCTION store_counters_packs();

        CREATE TABLE auth_users(
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            grants TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            created_by TEXT NOT NULL
        );
        CREATE TABLE auth_tokens(
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('robot', 'runner', 'node')),
            secret_hash BYTEA NOT NULL UNIQUE,
            grants TEXT NOT NULL,
            labels TEXT,
            deployments TEXT,
            created_at BIGINT NOT NULL,
            created_by TEXT NOT NULL,
            expires_at BIGINT,
            revoked_at BIGINT
        );
        CREATE UNIQUE INDEX auth_tokens_active_name ON auth_tokens(name) WHERE revoked_at IS NULL;
        """
}
