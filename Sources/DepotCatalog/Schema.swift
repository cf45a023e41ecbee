import DepotCore

/// The catalog's schema as an ordered list of migrations; `PRAGMA user_version` records
/// how many have been applied. Migrations are append-only: never edit a released one.
enum Schema {
    static let migrations: [String] = [
        // 1: the chunk store (packs, chunk index, blobs and their recipes, GC roots).
        """
        CREATE TABLE packs(
            id INTEGER PRIMARY KEY AUTOINCREMENT,       -- ids are never reused
            committed_size INTEGER NOT NULL DEFAULT 0,  -- bytes known durable; the tail past it is cut on open
            sealed INTEGER NOT NULL DEFAULT 0,          -- 0 open, 1 sealed, 2 being deleted by GC (no chunk rows)
            created_at INTEGER NOT NULL
        );
        CREATE TABLE chunks(
            hash BLOB PRIMARY KEY,                      -- sha256 of the uncompressed bytes
            pack_id INTEGER NOT NULL REFERENCES packs(id),
            offset INTEGER NOT NULL,                    -- of the record header in the pack
            stored_length INTEGER NOT NULL,
            raw_length INTEGER NOT NULL,
            codec INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX chunks_by_pack ON chunks(pack_id, offset);
        CREATE TABLE blobs(
            id INTEGER PRIMARY KEY AUTOINCREMENT,       -- ids are never reused
            digest BLOB UNIQUE,                         -- NULL while the blob is being written
            size INTEGER NOT NULL DEFAULT 0,
            chunker TEXT NOT NULL,
            state INTEGER NOT NULL,                     -- 0 writing, 1 complete
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE recipes(
            blob_id INTEGER NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
            offset INTEGER NOT NULL,
            length INTEGER NOT NULL,
            chunk_hash BLOB NOT NULL,
            PRIMARY KEY(blob_id, offset)
        ) WITHOUT ROWID;
        CREATE INDEX recipes_by_chunk ON recipes(chunk_hash);
        CREATE TABLE blob_roots(
            digest BLOB PRIMARY KEY,
            reason TEXT NOT NULL,
            created_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
        // 2: the OCI registry (repositories, blob links, manifests and their references, tags and their journal, uploads).
        """
        CREATE TABLE repositories(
            id INTEGER PRIMARY KEY,
            name TEXT UNIQUE NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE repository_blobs(                  -- blobs uploaded to or mounted into a repository
            repo_id INTEGER NOT NULL REFERENCES repositories(id),
            digest BLOB NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY(repo_id, digest)
        ) WITHOUT ROWID;
        CREATE TABLE manifests(
            repo_id INTEGER NOT NULL REFERENCES repositories(id),
            digest BLOB NOT NULL,
            media_type TEXT NOT NULL,
            artifact_type TEXT,
            subject BLOB,
            annotations TEXT,                           -- JSON object, for referrers
            content BLOB NOT NULL,                      -- the exact bytes pushed
            created_at INTEGER NOT NULL,
            PRIMARY KEY(repo_id, digest)
        ) WITHOUT ROWID;
        CREATE INDEX manifests_by_subject ON manifests(repo_id, subject);
        CREATE TABLE manifest_refs(                     -- what a manifest references: blobs (kind 0) or manifests (kind 1)
            repo_id INTEGER NOT NULL,
            manifest BLOB NOT NULL,
            child BLOB NOT NULL,
            kind INTEGER NOT NULL,
            PRIMARY KEY(repo_id, manifest, child, kind)
        ) WITHOUT ROWID;
        CREATE INDEX manifest_refs_by_child ON manifest_refs(child, kind, repo_id);
        CREATE TABLE tags(
            repo_id INTEGER NOT NULL REFERENCES repositories(id),
            name TEXT NOT NULL,
            digest BLOB NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY(repo_id, name)
        ) WITHOUT ROWID;
        CREATE INDEX tags_by_digest ON tags(repo_id, digest);
        CREATE TABLE tag_journal(                       -- every tag move: who, when, from, to
            id INTEGER PRIMARY KEY,
            repo_id INTEGER NOT NULL,
            tag TEXT NOT NULL,
            from_digest BLOB,
            to_digest BLOB,
            actor TEXT NOT NULL,
            reason TEXT,
            at INTEGER NOT NULL
        );
        CREATE INDEX tag_journal_by_tag ON tag_journal(repo_id, tag, id);
        """,
        // 3: format metadata extracted from a manifest's files at push (JSON), by manifest digest.
        """
        CREATE TABLE manifest_metadata(
            digest BLOB PRIMARY KEY,
            json TEXT NOT NULL
        );
        """,
        // 4: lineage, pins, the audit journal; tag journal times in milliseconds.
        """
        UPDATE tag_journal SET at = at * 1000;
        CREATE TABLE lineage_edges(                     -- child was derived from parent (both manifest digests)
            child BLOB NOT NULL,
            parent BLOB NOT NULL,
            relation TEXT NOT NULL,                     -- trained-from, fine-tuned-from, ..., subject
            parent_ref TEXT NOT NULL,                   -- as declared: repo@digest (maybe another registry's)
            repo_id INTEGER NOT NULL,                   -- where the child was pushed
            run TEXT, dataset TEXT, source_commit TEXT, metrics TEXT, job TEXT,
            created_at INTEGER NOT NULL,
            PRIMARY KEY(child, parent, relation)
        ) WITHOUT ROWID;
        CREATE INDEX lineage_by_parent ON lineage_edges(parent, child);
        CREATE INDEX manifests_by_digest ON manifests(digest);
        CREATE TABLE pins(
            digest BLOB PRIMARY KEY,
            repo_id INTEGER NOT NULL,
            reason TEXT,
            actor TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE audit_log(                         -- append-only; hash = sha256(prev_hash || entry)
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,                        -- milliseconds since 1970
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            repository TEXT,
            digest TEXT,
            tag TEXT,
            details TEXT,
            prev_hash BLOB NOT NULL,
            hash BLOB NOT NULL
        );
        CREATE INDEX audit_by_time ON audit_log(at);
        CREATE INDEX audit_by_repository ON audit_log(repository, at);
        """,
        // 5: the events outbox (written in the transaction of the change) and webhook deliveries.
        """
        CREATE TABLE events(
            id INTEGER PRIMARY KEY AUTOINCREMENT,       -- the cursor consumers resume from
            at INTEGER NOT NULL,                        -- milliseconds since 1970
            type TEXT NOT NULL,                         -- manifest.pushed, tag.moved, manifest.deleted, ...
            repository TEXT,
            payload TEXT NOT NULL                       -- the JSON body delivered
        );
        CREATE TABLE webhook_cursors(
            webhook TEXT PRIMARY KEY,
            last_event INTEGER NOT NULL
        );
        CREATE TABLE webhook_deliveries(
            id INTEGER PRIMARY KEY,
            webhook TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            at INTEGER NOT NULL,
            status INTEGER,                             -- HTTP status, NULL when no answer
            error TEXT,
            duration_ms INTEGER NOT NULL,
            outcome TEXT NOT NULL                       -- delivered, retrying, gave-up
        );
        CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries(webhook, id);
        """,
        // 6: pipeline runs and the durable job queue.
        """
        CREATE TABLE pipeline_runs(
            id INTEGER PRIMARY KEY,
            pipeline TEXT NOT NULL,
            repository TEXT NOT NULL,
            trigger_digest TEXT NOT NULL,               -- the pushed manifest that started the run
            trigger_tag TEXT,
            event_id INTEGER,
            created_at INTEGER NOT NULL,                -- milliseconds since 1970
            UNIQUE(pipeline, repository, trigger_digest) -- a replayed event never starts a second run
        );
        CREATE TABLE jobs(
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES pipeline_runs(id),
            pipeline TEXT NOT NULL,
            stage TEXT NOT NULL,
            kind TEXT NOT NULL,                         -- exec, builtin (runners); webhook, canary (the server)
            spec TEXT NOT NULL,                         -- the stage definition (JSON) the runner executes
            state TEXT NOT NULL,                        -- queued, leased, running, succeeded, failed, cancelled
            input_repository TEXT NOT NULL,
            input_digest TEXT NOT NULL,
            input_tag TEXT,
            output_tag TEXT,                            -- from the pipeline's naming rule
            labels TEXT NOT NULL DEFAULT '',            -- comma-separated labels a runner needs
            attempt INTEGER NOT NULL DEFAULT 0,         -- attempts started so far
            max_attempts INTEGER NOT NULL,
            timeout_ms INTEGER NOT NULL,
            not_before INTEGER NOT NULL DEFAULT 0,      -- retry backoff: not leased before this time
            runner TEXT,
            lease_token TEXT,
            lease_expires INTEGER,
            job_key TEXT,                               -- memoization key, known once started
            output_digest TEXT,
            memoized INTEGER NOT NULL DEFAULT 0,
            log_digest TEXT,
            reason TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER,
            UNIQUE(run_id, stage)
        );
        CREATE INDEX jobs_by_state ON jobs(state, kind, id);
        CREATE INDEX jobs_by_pipeline ON jobs(pipeline, id);
        CREATE TABLE job_outputs(                       -- memoization: key -> the artifact it produced
            job_key TEXT PRIMARY KEY,
            repository TEXT NOT NULL,
            digest TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE INDEX job_outputs_by_digest ON job_outputs(digest);
        """,
        // 7: deployments (environment alias → stable/canary digests), rollouts, their decisions, nodes.
        """
        CREATE TABLE deployments(
            id INTEGER PRIMARY KEY,
            repository TEXT NOT NULL,
            environment TEXT NOT NULL,                  -- the alias, e.g. production
            model_name TEXT NOT NULL,                   -- the Triton model the bundles serve
            stable_digest TEXT,
            canary_digest TEXT,
            weight INTEGER NOT NULL DEFAULT 0,          -- percent of nodes on the canary
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE(repository, environment)
        );
        CREATE TABLE deployment_versions(               -- Triton version number of each digest served
            deployment_id INTEGER NOT NULL,
            digest TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY(deployment_id, digest),
            UNIQUE(deployment_id, version)
        );
        CREATE TABLE rollouts(
            id INTEGER PRIMARY KEY,
            deployment_id INTEGER NOT NULL,
            stable_digest TEXT,
            canary_digest TEXT NOT NULL,
            state TEXT NOT NULL,                        -- running, paused, promoted, rolled-back, aborted
            steps TEXT NOT NULL,                        -- JSON list of weights
            step_index INTEGER NOT NULL,
            weight INTEGER NOT NULL,
            analysis_ms INTEGER NOT NULL,
            step_started_at INTEGER NOT NULL,
            failures TEXT NOT NULL DEFAULT '{}',        -- JSON: check -> failed measurements so far
            started_by TEXT NOT NULL,
            job_id INTEGER,                             -- the pipeline job that started it, if any
            reason TEXT,
            created_at INTEGER NOT NULL,
            finished_at INTEGER
        );
        CREATE UNIQUE INDEX one_active_rollout ON rollouts(deployment_id) WHERE state IN ('running', 'paused');
        CREATE TABLE rollout_decisions(
            id INTEGER PRIMARY KEY,
            rollout_id INTEGER NOT NULL,
            at INTEGER NOT NULL,
            step_index INTEGER NOT NULL,
            weight INTEGER NOT NULL,
            decision TEXT NOT NULL,                     -- start, advance, pause, resume, promote, rollback, abort
            actor TEXT NOT NULL,
            reason TEXT,
            measurements TEXT                           -- JSON: the analysis values behind the decision
        );
        CREATE INDEX rollout_decisions_by_rollout ON rollout_decisions(rollout_id, id);
        CREATE TABLE deployment_nodes(
            deployment_id INTEGER NOT NULL,
            node TEXT NOT NULL,
            digest TEXT,                                -- what the node reports it serves
            version INTEGER,
            state TEXT,                                 -- ready, failed
            reason TEXT,
            seen_at INTEGER NOT NULL,                   -- last resolve or report
            reported_at INTEGER,
            PRIMARY KEY(deployment_id, node)
        );
        CREATE TABLE served_intervals(                  -- "digest X served W% of ENV from T1 to T2"
            id INTEGER PRIMARY KEY,
            deployment_id INTEGER NOT NULL,
            digest TEXT NOT NULL,
            role TEXT NOT NULL,                         -- stable, canary
            weight INTEGER NOT NULL,
            from_at INTEGER NOT NULL,
            to_at INTEGER
        );
        CREATE INDEX served_by_digest ON served_intervals(digest, from_at);
        """,
        // 8: store counters kept by triggers in the transaction of every change, so /metrics reads one
        // row instead of scanning the chunk index (`depot stats` still scans: it is the check).
        """
        CREATE TABLE store_counters(
            id INTEGER PRIMARY KEY CHECK (id = 1),
            blobs INTEGER NOT NULL, logical_bytes INTEGER NOT NULL, writing INTEGER NOT NULL,
            chunks INTEGER NOT NULL, chunk_raw_bytes INTEGER NOT NULL, chunk_stored_bytes INTEGER NOT NULL,
            packs INTEGER NOT NULL, pack_bytes INTEGER NOT NULL
        );
        INSERT INTO store_counters SELECT 1,
            (SELECT COUNT(*) FROM blobs WHERE state = 1), (SELECT COALESCE(SUM(size), 0) FROM blobs WHERE state = 1),
            (SELECT COUNT(*) FROM blobs WHERE state = 0),
            (SELECT COUNT(*) FROM chunks), (SELECT COALESCE(SUM(raw_length), 0) FROM chunks),
            (SELECT COALESCE(SUM(stored_length), 0) FROM chunks),
            (SELECT COUNT(*) FROM packs), (SELECT COALESCE(SUM(committed_size), 0) FROM packs);
        CREATE TRIGGER store_counters_blob_insert AFTER INSERT ON blobs BEGIN
            UPDATE store_counters SET blobs = blobs + (NEW.state = 1),
                logical_bytes = logical_bytes + (CASE WHEN NEW.state = 1 THEN NEW.size ELSE 0 END), writing = writing + (NEW.state = 0);
        END;
        CREATE TRIGGER store_counters_blob_update AFTER UPDATE OF state, size ON blobs BEGIN
            UPDATE store_counters SET blobs = blobs + (NEW.state = 1) - (OLD.state = 1),
                logical_bytes = logical_bytes + (CASE WHEN NEW.state = 1 THEN NEW.size ELSE 0 END)
                    - (CASE WHEN OLD.state = 1 THEN OLD.size ELSE 0 END),
                writing = writing + (NEW.state = 0) - (OLD.state = 0);
        END;
        CREATE TRIGGER store_counters_blob_delete AFTER DELETE ON blobs BEGIN
            UPDATE store_counters SET blobs = blobs - (OLD.state = 1),
                logical_bytes = logical_bytes - (CASE WHEN OLD.state = 1 THEN OLD.size ELSE 0 END), writing = writing - (OLD.state = 0);
        END;
        CREATE TRIGGER store_counters_chunk_insert AFTER INSERT ON chunks BEGIN
            UPDATE store_counters SET chunks = chunks + 1, chunk_raw_bytes = chunk_raw_bytes + NEW.raw_length,
                chunk_stored_bytes = chunk_stored_bytes + NEW.stored_length;
        END;
        CREATE TRIGGER store_counters_chunk_update AFTER UPDATE OF raw_length, stored_length ON chunks BEGIN
            UPDATE store_counters SET chunk_raw_bytes = chunk_raw_bytes + NEW.raw_length - OLD.raw_length,
                chunk_stored_bytes = chunk_stored_bytes + NEW.stored_length - OLD.stored_length;
        END;
        CREATE TRIGGER store_counters_chunk_delete AFTER DELETE ON chunks BEGIN
            UPDATE store_counters SET chunks = chunks - 1, chunk_raw_bytes = chunk_raw_bytes - OLD.raw_length,
                chunk_stored_bytes = chunk_stored_bytes - OLD.stored_length;
        END;
        CREATE TRIGGER store_counters_pack_insert AFTER INSERT ON packs BEGIN
            UPDATE store_counters SET packs = packs + 1, pack_bytes = pack_bytes + NEW.committed_size;
        END;
        CREATE TRIGGER store_counters_pack_update AFTER UPDATE OF committed_size ON packs BEGIN
            UPDATE store_counters SET pack_bytes = pack_bytes + NEW.committed_size - OLD.committed_size;
        END;
        CREATE TRIGGER store_counters_pack_delete AFTER DELETE ON packs BEGIN
            UPDATE store_counters SET packs = packs - 1, pack_bytes = pack_bytes - OLD.committed_size;
        END;
        """,
        // 9: one time unit. Every time column holds milliseconds since 1970 (UTC). Migrations 4-7 already
        // wrote milliseconds (tag_journal converted in 4, tags, audit, events, webhook deliveries,
        // lineage, pins, runs, jobs, job outputs, deployments, rollouts, nodes, served intervals);
        // the chunk store's and the registry's own rows (packs, blobs, blob_roots, repositories,
        // repository_blobs, manifests) were still in seconds, so a GC cutoff or a lineage time
        // compared across tables mixed units. Milliseconds because most tables and every API
        // answer already use them, and the event/audit order needs sub-second times; an Int64
        // of milliseconds lasts 292 million years. Existing rows are multiplied by 1000 here.
        // No index or trigger reads these columns (store_counters' triggers fire on state, size,
        // lengths and committed_size only), so none changes.
        //
        // Digests were unified later, by migration 14: 32-byte BLOBs everywhere except
        // audit_log.digest (its hash chain covers the text as written).
        """
        UPDATE packs SET created_at = created_at * 1000;
        UPDATE blobs SET created_at = created_at * 1000, updated_at = updated_at * 1000;
        UPDATE blob_roots SET created_at = created_at * 1000;
        UPDATE repositories SET created_at = created_at * 1000;
        UPDATE repository_blobs SET created_at = created_at * 1000;
        UPDATE manifests SET created_at = created_at * 1000;
        """,
        // 10: identities. Users (a PBKDF2 password hash, never the password) and tokens (a
        // SHA-256 hash of the 256-bit secret, never the secret; `kind` robot/runner/node). Grants,
        // runner labels and node deployments are JSON arrays of the wire types (GrantSpec,
        // strings): they are read and written whole, never queried by element. A token is never
        // deleted, only revoked, so the audit journal's token ids always resolve. Names are unique
        // among tokens that are not revoked, so `depot admin token revoke NAME` means one token.
        """
        CREATE TABLE auth_users(
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            grants TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            created_by TEXT NOT NULL
        );
        CREATE TABLE auth_tokens(
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('robot', 'runner', 'node')),
            secret_hash BLOB NOT NULL UNIQUE,
            grants TEXT NOT NULL,
            labels TEXT,
            deployments TEXT,
            created_at INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            expires_at INTEGER,
            revoked_at INTEGER
        );
        CREATE UNIQUE INDEX auth_tokens_active_name ON auth_tokens(name) WHERE revoked_at IS NULL;
        """,
        // 11: verified lineage. An edge is "declared" by whoever pushed the child (annotations
        // anyone with push access can write); `verified_job` is set when a pipeline job whose
        // lease produced the child completes: the runner held the lease and the output carries
        // the job's memo key, so the registry itself vouches for the edge (and signs the output).
        // NULL: declared only.
        """
        ALTER TABLE lineage_edges ADD COLUMN verified_job INTEGER;
        """,
        // 12: upload sessions in the catalog, so any replica serves the next request of a chunked
        // upload (see `UploadSessionRow`). A segment is an unfinished blob holding a committed part
        // of the upload; GC keeps every blob a segment names. Chunk proofs (a principal uploaded
        // a chunk's bytes, so it may name the chunk in a recipe) move here from each process's
        // memory for the same reason: the upload and the recipe commit may reach two replicas.
        """
        CREATE TABLE upload_sessions(
            id TEXT PRIMARY KEY,
            repository TEXT NOT NULL,
            client TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            writer_state BLOB,
            holder TEXT,
            held_until INTEGER
        );
        CREATE INDEX upload_sessions_by_client ON upload_sessions(client);
        CREATE TABLE upload_segments(
            session_id TEXT NOT NULL,
            first_byte INTEGER NOT NULL,
            end_byte INTEGER NOT NULL,
            blob_id INTEGER NOT NULL,
            PRIMARY KEY(session_id, first_byte)
        );
        CREATE INDEX upload_segments_by_blob ON upload_segments(blob_id);
        CREATE TABLE chunk_proofs(                      -- chunks a principal uploaded (ChunkVisibility)
            principal TEXT NOT NULL,
            hash BLOB NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY(principal, hash)
        ) WITHOUT ROWID;
        CREATE INDEX chunk_proofs_by_age ON chunk_proofs(created_at);
        """,
        // 13: search facts. What the web UI's search filters on, one row per fact of a manifest
        // in a repository (`format=onnx`, `opset=17`, `run=exp-42`, `annotation.KEY=VALUE`), so
        // a search is an index lookup, not a scan of every manifest's JSON. Derived data: written
        // with the manifest (same transaction), deleted with it, and rebuilt for manifests pushed
        // before this migration by `Registry.indexArtifactFacts` (a manifest always has at least
        // its `media_type` fact, so "no rows" means "not indexed yet").
        """
        CREATE TABLE artifact_facts(
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            repo_id INTEGER NOT NULL,
            digest BLOB NOT NULL,
            created_at INTEGER NOT NULL,                -- the manifest's: a search pages newest first by index
            PRIMARY KEY(key, value, repo_id, digest)
        ) WITHOUT ROWID;
        CREATE INDEX artifact_facts_by_manifest ON artifact_facts(repo_id, digest);
        CREATE INDEX artifact_facts_by_time ON artifact_facts(key, value, created_at, repo_id, digest);
        CREATE INDEX manifests_by_time ON manifests(created_at, repo_id, digest);
        CREATE INDEX manifests_by_repository_time ON manifests(repo_id, created_at, digest);
        -- Referrers by subject: only manifests that have one. With every other manifest's NULL
        -- in it, the full index looked unselective to SQLite's statistics (ANALYZE), which then
        -- scanned the whole repository for each referrers query (28 ms at 100,000 manifests).
        DROP INDEX manifests_by_subject;
        CREATE INDEX manifests_by_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
        """,
        // 14: one digest representation. The feature tables of migrations 6-7 held digests as
        // `sha256:<hex>` TEXT; they now hold the 32-byte BLOB every other table holds, so a join
        // with manifests compares bytes through an index instead of formatting every manifest's
        // digest as text (GC's kept set, job-output memoization). audit_log.digest stays TEXT:
        // its hash chain covers the text as written. `depot_digest_blob` (SQLiteConnection)
        // converts; a value that is not a digest becomes its UTF-8 bytes, so no row is lost and
        // it reads back as the text it was (`Row.digestText`).
        //
        // SQLite cannot change a column's type, so each table is rebuilt: the old one renamed
        // (which also repoints jobs.run_id's reference to the renamed pipeline_runs), the new one
        // created under the name, rows copied, the old dropped (jobs first: it references
        // pipeline_runs), and the indexes created again.
        """
        ALTER TABLE pipeline_runs RENAME TO pipeline_runs_13;
        ALTER TABLE jobs RENAME TO jobs_13;
        ALTER TABLE job_outputs RENAME TO job_outputs_13;
        ALTER TABLE deployments RENAME TO deployments_13;
        ALTER TABLE deployment_versions RENAME TO deployment_versions_13;
        ALTER TABLE rollouts RENAME TO rollouts_13;
        ALTER TABLE deployment_nodes RENAME TO deployment_nodes_13;
        ALTER TABLE served_intervals RENAME TO served_intervals_13;
        DROP INDEX jobs_by_state;
        DROP INDEX jobs_by_pipeline;
        DROP INDEX job_outputs_by_digest;
        DROP INDEX one_active_rollout;
        DROP INDEX served_by_digest;

        CREATE TABLE pipeline_runs(
            id INTEGER PRIMARY KEY,
            pipeline TEXT NOT NULL,
            repository TEXT NOT NULL,
            trigger_digest BLOB NOT NULL,               -- the pushed manifest that started the run
            trigger_tag TEXT,
            event_id INTEGER,
            created_at INTEGER NOT NULL,                -- milliseconds since 1970
            UNIQUE(pipeline, repository, trigger_digest) -- a replayed event never starts a second run
        );
        INSERT INTO pipeline_runs(id, pipeline, repository, trigger_digest, trigger_tag, event_id, created_at)
            SELECT id, pipeline, repository, depot_digest_blob(trigger_digest), trigger_tag, event_id, created_at FROM pipeline_runs_13;
        CREATE TABLE jobs(
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES pipeline_runs(id),
            pipeline TEXT NOT NULL,
            stage TEXT NOT NULL,
            kind TEXT NOT NULL,                         -- exec, builtin (runners); webhook, canary (the server)
            spec TEXT NOT NULL,                         -- the stage definition (JSON) the runner executes
            state TEXT NOT NULL,                        -- queued, leased, running, succeeded, failed, cancelled
            input_repository TEXT NOT NULL,
            input_digest BLOB NOT NULL,
            input_tag TEXT,
            output_tag TEXT,                            -- from the pipeline's naming rule
            labels TEXT NOT NULL DEFAULT '',            -- comma-separated labels a runner needs
            attempt INTEGER NOT NULL DEFAULT 0,         -- attempts started so far
            max_attempts INTEGER NOT NULL,
            timeout_ms INTEGER NOT NULL,
            not_before INTEGER NOT NULL DEFAULT 0,      -- retry backoff: not leased before this time
            runner TEXT,
            lease_token TEXT,
            lease_expires INTEGER,
            job_key TEXT,                               -- memoization key, known once started
            output_digest BLOB,
            memoized INTEGER NOT NULL DEFAULT 0,
            log_digest BLOB,
            reason TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER,
            UNIQUE(run_id, stage)
        );
        INSERT INTO jobs(id, run_id, pipeline, stage, kind, spec, state, input_repository, input_digest, input_tag, output_tag, labels,
                         attempt, max_attempts, timeout_ms, not_before, runner, lease_token, lease_expires, job_key, output_digest,
                         memoized, log_digest, reason, created_at, updated_at, started_at, finished_at)
            SELECT id, run_id, pipeline, stage, kind, spec, state, input_repository, depot_digest_blob(input_digest), input_tag,
                   output_tag, labels, attempt, max_attempts, timeout_ms, not_before, runner, lease_token, lease_expires, job_key,
                   depot_digest_blob(output_digest), memoized, depot_digest_blob(log_digest), reason, created_at, updated_at,
                   started_at, finished_at
            FROM jobs_13;
        CREATE TABLE job_outputs(                       -- memoization: key -> the artifact it produced
            job_key TEXT PRIMARY KEY,
            repository TEXT NOT NULL,
            digest BLOB NOT NULL,
            created_at INTEGER NOT NULL
        );
        INSERT INTO job_outputs(job_key, repository, digest, created_at)
            SELECT job_key, repository, depot_digest_blob(digest), created_at FROM job_outputs_13;
        CREATE TABLE deployments(
            id INTEGER PRIMARY KEY,
            repository TEXT NOT NULL,
            environment TEXT NOT NULL,                  -- the alias, e.g. production
            model_name TEXT NOT NULL,                   -- the Triton model the bundles serve
            stable_digest BLOB,
            canary_digest BLOB,
            weight INTEGER NOT NULL DEFAULT 0,          -- percent of nodes on the canary
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE(repository, environment)
        );
        INSERT INTO deployments(id, repository, environment, model_name, stable_digest, canary_digest, weight, created_at, updated_at)
            SELECT id, repository, environment, model_name, depot_digest_blob(stable_digest), depot_digest_blob(canary_digest), weight,
                   created_at, updated_at
            FROM deployments_13;
        CREATE TABLE deployment_versions(               -- Triton version number of each digest served
            deployment_id INTEGER NOT NULL,
            digest BLOB NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY(deployment_id, digest),
            UNIQUE(deployment_id, version)
        );
        INSERT INTO deployment_versions(deployment_id, digest, version)
            SELECT deployment_id, depot_digest_blob(digest), version FROM deployment_versions_13;
        CREATE TABLE rollouts(
            id INTEGER PRIMARY KEY,
            deployment_id INTEGER NOT NULL,
            stable_digest BLOB,
            canary_digest BLOB NOT NULL,
            state TEXT NOT NULL,                        -- running, paused, promoted, rolled-back, aborted
            steps TEXT NOT NULL,                        -- JSON list of weights
            step_index INTEGER NOT NULL,
            weight INTEGER NOT NULL,
            analysis_ms INTEGER NOT NULL,
            step_started_at INTEGER NOT NULL,
            failures TEXT NOT NULL DEFAULT '{}',        -- JSON: check -> failed measurements so far
            started_by TEXT NOT NULL,
            job_id INTEGER,                             -- the pipeline job that started it, if any
            reason TEXT,
            created_at INTEGER NOT NULL,
            finished_at INTEGER
        );
        INSERT INTO rollouts(id, deployment_id, stable_digest, canary_digest, state, steps, step_index, weight, analysis_ms,
                             step_started_at, failures, started_by, job_id, reason, created_at, finished_at)
            SELECT id, deployment_id, depot_digest_blob(stable_digest), depot_digest_blob(canary_digest), state, steps, step_index,
                   weight, analysis_ms, step_started_at, failures, started_by, job_id, reason, created_at, finished_at
            FROM rollouts_13;
        CREATE TABLE deployment_nodes(
            deployment_id INTEGER NOT NULL,
            node TEXT NOT NULL,
            digest BLOB,                                -- what the node reports it serves
            version INTEGER,
            state TEXT,                                 -- ready, failed
            reason TEXT,
            seen_at INTEGER NOT NULL,                   -- last resolve or report
            reported_at INTEGER,
            PRIMARY KEY(deployment_id, node)
        );
        INSERT INTO deployment_nodes(deployment_id, node, digest, version, state, reason, seen_at, reported_at)
            SELECT deployment_id, node, depot_digest_blob(digest), version, state, reason, seen_at, reported_at FROM deployment_nodes_13;
        CREATE TABLE served_intervals(                  -- "digest X served W% of ENV from T1 to T2"
            id INTEGER PRIMARY KEY,
            deployment_id INTEGER NOT NULL,
            digest BLOB NOT NULL,
            role TEXT NOT NULL,                         -- stable, canary
            weight INTEGER NOT NULL,
            from_at INTEGER NOT NULL,
            to_at INTEGER
        );
        INSERT INTO served_intervals(id, deployment_id, digest, role, weight, from_at, to_at)
            SELECT id, deployment_id, depot_digest_blob(digest), role, weight, from_at, to_at FROM served_intervals_13;

        DROP TABLE jobs_13;
        DROP TABLE pipeline_runs_13;
        DROP TABLE job_outputs_13;
        DROP TABLE deployments_13;
        DROP TABLE deployment_versions_13;
        DROP TABLE rollouts_13;
        DROP TABLE deployment_nodes_13;
        DROP TABLE served_intervals_13;
        CREATE INDEX jobs_by_state ON jobs(state, kind, id);
        CREATE INDEX jobs_by_pipeline ON jobs(pipeline, id);
        CREATE INDEX job_outputs_by_digest ON job_outputs(digest);
        CREATE UNIQUE INDEX one_active_rollout ON rollouts(deployment_id) WHERE state IN ('running', 'paused');
        CREATE INDEX served_by_digest ON served_intervals(digest, from_at);
        """,
        // 15: cast-aware deduplication (DepotStore/CastChunks.swift). A chunk of an fp16/bf16
        // tensor that is an exact cast of stored fp32 bytes has no record in a pack: its row is in
        // `chunk_casts` (instead of `chunks`), and its sources, read in `seq` order, are chunks
        // in `chunks` (never casts themselves), kept by GC while the cast is. `tensor_prints`
        // pairs the 16-bit tensors of scanned blobs with the fp32 tensors they may be casts of,
        // whichever was stored first; a blob's prints go with it. `casts_scanned`: the blob was looked at (1) or not yet (0).
        """
        CREATE TABLE chunk_casts(
            hash BLOB PRIMARY KEY,                      -- sha256 of the chunk (what recipes name)
            raw_length INTEGER NOT NULL,
            kind INTEGER NOT NULL,                      -- CastKind: 1 fp32 -> fp16, 2 fp32 -> bf16
            skip INTEGER NOT NULL,                      -- bytes of the first cast value before the chunk (0 or 1)
            source_offset INTEGER NOT NULL,             -- where the first value starts in the first source
            created_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE chunk_cast_sources(
            hash BLOB NOT NULL,                         -- the cast chunk
            seq INTEGER NOT NULL,
            source_hash BLOB NOT NULL,                  -- a chunk in `chunks`
            PRIMARY KEY(hash, seq)
        ) WITHOUT ROWID;
        CREATE INDEX chunk_cast_sources_by_source ON chunk_cast_sources(source_hash);
        CREATE TABLE tensor_prints(
            print BLOB NOT NULL,                        -- TensorPrint: 16 bytes
            blob_id INTEGER NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
            data_offset INTEGER NOT NULL,               -- of the tensor's data in the blob
            source INTEGER NOT NULL,                    -- 1: an fp32 tensor whose cast has this print; 0: a 16-bit tensor
            PRIMARY KEY(print, blob_id, data_offset)
        ) WITHOUT ROWID;
        CREATE INDEX tensor_prints_by_blob ON tensor_prints(blob_id);
        ALTER TABLE blobs ADD COLUMN casts_scanned INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX blobs_cast_unscanned ON blobs(id) WHERE casts_scanned = 0;
        """,
        // 16: PostgreSQL counts chunk rows per statement instead of per row
        // (`PostgresSchema.chunkCounters`). SQLite's row triggers cost the same for every row,
        // so nothing changes here; the version moves so that one number means one schema.
        "SELECT 1;",
    ]

    static func migrate(_ conn: SQLiteConnection) throws {
        try migrate(conn, upTo: migrations.count)
    }

    /// The catalog's schema version: how many migrations were applied (0: an empty catalog).
    static func version(_ conn: any CatalogConnection) throws -> Int64 {
        switch conn.dialect {
        case .sqlite: return try conn.first("PRAGMA user_version") { $0.int(0) } ?? 0
        case .postgres: return try PostgresSchema.version(conn)
        }
    }

    /// Applies the migrations after the catalog's version up to `target` (tests build old catalogs).
    static func migrate(_ conn: SQLiteConnection, upTo target: Int) throws {
        let current = try conn.first("PRAGMA user_version") { $0.int(0) } ?? 0
        let known = Int64(migrations.count)
        if current > known {
            throw DepotError.storage(
                "catalog \(conn.path) has schema version \(current), newer than this build understands (\(known)); upgrade depot")
        }
        try conn.registerDigestFunction()
        for version in Int(current)..<max(Int(current), min(target, migrations.count)) {
            try conn.transaction {
                try conn.execute(migrations[version])
                try conn.execute("PRAGMA user_version = \(version + 1)")
            }
        }
    }
}
