import DepotAPI
import DepotCore
import Foundation
import Testing

@testable import DepotCatalog

@Suite struct EnumRoundTripTests {
    @Test func everyJobStateIsStoredAsItsRawValueAndReadBack() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id = try queuedJob(db)
        for state in JobState.allCases {
            try db.write { conn in
                try conn.run("UPDATE jobs SET state = ? WHERE id = ?", .state(state), .int(id))
                #expect(try conn.first("SELECT state FROM jobs WHERE id = ?", .int(id)) { $0.text(0) } == state.rawValue)
                #expect(try conn.job(id)?.state == state)
                #expect(try conn.jobs(state: state, pipeline: nil, limit: 5).map(\.id) == [id])
            }
        }
    }

    @Test func everyRolloutAndNodeStateRoundTrips() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try db.write { conn in
            let d = try conn.createDeployment(repository: "team/model", environment: "production", modelName: "m", now: 1)
            for state in RolloutState.allCases {
                let id = try conn.insertRollout(
                    RolloutRecord(
                        id: 0, deploymentID: d.id, stable: nil, canary: "sha256:c", state: state, steps: [100], stepIndex: 0,
                        weight: 0, analysisMs: 1, stepStartedAt: 1, failures: [:], startedBy: "me", jobID: nil, reason: nil,
                        createdAt: 1, finishedAt: nil))
                #expect(try conn.first("SELECT state FROM rollouts WHERE id = ?", .int(id)) { $0.text(0) } == state.rawValue)
                #expect(try conn.rollout(id)?.state == state)
                // The one-active-rollout index: end an active one before the next.
                if state.isActive { try conn.run("UPDATE rollouts SET state = 'aborted' WHERE id = ?", .int(id)) }
            }
            for (i, state) in NodeState.allCases.enumerated() {
                try conn.reportNode(deployment: d.id, node: "n\(i)", digest: "sha256:c", version: 1, state: state, reason: nil, now: 2)
            }
            try conn.touchNode(deployment: d.id, node: "silent", now: 3)
            let nodes = try conn.nodes(deployment: d.id)
            #expect(nodes.map(\.state) == NodeState.allCases.map { Optional($0) } + [nil])
        }
    }

    @Test func anUnknownStoredStateIsAnErrorNotADefault() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id = try queuedJob(db)
        try db.write { conn in try conn.run("UPDATE jobs SET state = 'exploded' WHERE id = ?", .int(id)) }
        #expect(throws: DepotError.self) { try db.read { try $0.job(id) } }
    }

    @Test func rowsAreReadByColumnName() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try db.read { conn in
            let r = try conn.first("SELECT 2 AS b, 'x' AS a, NULL AS c") { s in
                (s.row.int("b"), s.row.text("a"), s.row.optionalText("c"), s.row.optionalInt("b"))
            }
            #expect(r?.0 == 2 && r?.1 == "x" && r?.2 == nil && r?.3 == 2)
        }
    }
}

@Suite struct MigrationTests {
    /// A catalog as the previous version (schema 8) left it, with rows in every table whose
    /// times migration 9 converts, and in tables it must leave alone.
    func schema8Catalog(at path: String) throws {
        let conn = try SQLiteConnection(path: path, readOnly: false)
        try conn.execute("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
        try Schema.migrate(conn, upTo: 8)
        #expect(try conn.first("PRAGMA user_version") { $0.int(0) } == 8)
        try conn.execute(
            """
            INSERT INTO packs(id, committed_size, sealed, created_at) VALUES(1, 1000, 1, 1700000000);
            INSERT INTO chunks(hash, pack_id, offset, stored_length, raw_length, codec) VALUES(zeroblob(32), 1, 8, 500, 900, 1);
            INSERT INTO blobs(id, digest, size, chunker, state, created_at, updated_at)
                VALUES(1, randomblob(32), 900, 'fastcdc', 1, 1700000001, 1700000002);
            INSERT INTO blobs(id, digest, size, chunker, state, created_at, updated_at) VALUES(2, NULL, 0, 'fastcdc', 0, 1700000003, 1700000004);
            INSERT INTO recipes(blob_id, offset, length, chunk_hash) VALUES(1, 0, 900, zeroblob(32));
            INSERT INTO blob_roots(digest, reason, created_at) VALUES(zeroblob(32), 'job-log', 1700000005);
            INSERT INTO repositories(id, name, created_at) VALUES(1, 'team/model', 1700000006);
            INSERT INTO repository_blobs(repo_id, digest, created_at) VALUES(1, zeroblob(32), 1700000007);
            INSERT INTO manifests(repo_id, digest, media_type, content, created_at)
                VALUES(1, zeroblob(32), 'application/vnd.oci.image.manifest.v1+json', X'7B7D', 1700000008);
            INSERT INTO tags(repo_id, name, digest, updated_at) VALUES(1, 'v1', zeroblob(32), 1700000009000);
            INSERT INTO tag_journal(repo_id, tag, to_digest, actor, at) VALUES(1, 'v1', zeroblob(32), 'me', 1700000009000);
            INSERT INTO pins(digest, repo_id, actor, created_at) VALUES(zeroblob(32), 1, 'me', 1700000010000);
            INSERT INTO events(at, type, repository, payload) VALUES(1700000011000, 'tag.moved', 'team/model', '{}');
            INSERT INTO pipeline_runs(id, pipeline, repository, trigger_digest, created_at) VALUES(1, 'p', 'team/model', 'sha256:aa', 1700000012000);
            INSERT INTO jobs(run_id, pipeline, stage, kind, spec, state, input_repository, input_digest, max_attempts, timeout_ms,
                             created_at, updated_at) VALUES(1, 'p', 's', 'exec', '{}', 'running', 'team/model', 'sha256:aa', 1, 1000,
                             1700000013000, 1700000014000);
            """)
    }

    @Test func aSchema8CatalogMigratesToMillisecondsKeepingEveryRow() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("depot-migrate-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/catalog.db"
        try schema8Catalog(at: path)
        // SQLite's migrations, whichever engine the suite runs on.
        let db = try Database(location: .sqlite(path: path))
        try db.read { (conn: any CatalogConnection) throws -> Void in
            func ints(_ sql: String) throws -> [Int64] {
                var out: [Int64] = []
                try conn.query(sql) { s in
                    for i in 0..<s.columnCount { out.append(s.int(i)) }
                }
                return out
            }
            #expect(try conn.first("PRAGMA user_version") { $0.int(0) } == Database.schemaVersion)
            #expect(Database.schemaVersion >= 9, "migration 9 and any after it ran")
            // Converted: seconds → milliseconds.
            #expect(try ints("SELECT created_at FROM packs") == [1_700_000_000_000])
            #expect(
                try ints("SELECT created_at, updated_at FROM blobs ORDER BY id") == [
                    1_700_000_001_000, 1_700_000_002_000, 1_700_000_003_000, 1_700_000_004_000,
                ])
            #expect(try ints("SELECT created_at FROM blob_roots") == [1_700_000_005_000])
            #expect(try ints("SELECT created_at FROM repositories") == [1_700_000_006_000])
            #expect(try ints("SELECT created_at FROM repository_blobs") == [1_700_000_007_000])
            #expect(try ints("SELECT created_at FROM manifests") == [1_700_000_008_000])
            // Already milliseconds: unchanged.
            #expect(try ints("SELECT updated_at FROM tags") == [1_700_000_009_000])
            #expect(try ints("SELECT at FROM tag_journal") == [1_700_000_009_000])
            #expect(try ints("SELECT created_at FROM pins") == [1_700_000_010_000])
            #expect(try ints("SELECT at FROM events") == [1_700_000_011_000])
            #expect(try ints("SELECT created_at FROM pipeline_runs") == [1_700_000_012_000])
            #expect(try conn.jobs(state: .running, pipeline: "p", limit: 5).map(\.createdAt) == [1_700_000_013_000])
            // Every row kept; the store counters (kept by triggers) still agree with the tables.
            #expect(try ints("SELECT COUNT(*) FROM chunks") == [1])
            #expect(try ints("SELECT COUNT(*) FROM recipes") == [1])
            #expect(
                try ints(
                    "SELECT blobs, logical_bytes, writing, chunks, chunk_raw_bytes, chunk_stored_bytes, packs, pack_bytes FROM store_counters"
                ) == [1, 900, 1, 1, 900, 500, 1, 1000])
            #expect(try conn.first("SELECT state FROM jobs") { $0.text(0) } == JobState.running.rawValue)
        }
        // Reopening does not convert again.
        let again = try Database(location: .sqlite(path: path))
        #expect(try again.read { try $0.first("SELECT created_at FROM packs") { $0.int(0) } } == 1_700_000_000_000)
    }

    /// Migration 14: the feature tables' text digests become 32-byte BLOBs, every row kept, the
    /// records read the same text, and the joins with manifests (GC's kept set) now match bytes.
    @Test func aSchema13CatalogMovesFeatureDigestsToBytesKeepingEveryRow() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("depot-migrate14-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/catalog.db"
        let a = "sha256:" + String(repeating: "a", count: 64)
        let b = "sha256:" + String(repeating: "b", count: 64)
        do {
            let conn = try SQLiteConnection(path: path, readOnly: false)
            try conn.execute("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
            try Schema.migrate(conn, upTo: 13)
            try Self.insertSchema13Rows(conn, a: a, b: b)
        }
        let db = try Database(location: .sqlite(path: path))
        try db.read { (conn: any CatalogConnection) throws -> Void in
            func types(_ sql: String) throws -> [String] {
                var out: [String] = []
                try conn.query(sql) { s in for i in 0..<s.columnCount { out.append(s.text(i)) } }
                return out
            }
            #expect(
                try types("SELECT typeof(trigger_digest), length(trigger_digest) FROM pipeline_runs ORDER BY id") == [
                    "blob", "32", "blob", "12",
                ])
            #expect(
                try types("SELECT typeof(input_digest), typeof(output_digest), typeof(log_digest) FROM jobs") == ["blob", "blob", "null"])
            #expect(try types("SELECT typeof(digest) FROM job_outputs") == ["blob"])
            #expect(try types("SELECT typeof(stable_digest), typeof(canary_digest) FROM deployments") == ["blob", "null"])
            #expect(
                try types("SELECT typeof(digest) FROM served_intervals UNION ALL SELECT typeof(digest) FROM deployment_nodes") == [
                    "blob", "blob",
                ])
            try Self.expectMigrated14(conn, a: a, b: b)
            // The job's reference to its run survived the rebuild, and nothing dangles.
            #expect(try types("SELECT \"table\" FROM pragma_foreign_key_list('jobs')") == ["pipeline_runs"])
            #expect(try types("SELECT COUNT(*) FROM pragma_foreign_key_check") == ["0"])
            #expect(try types("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '%\\_13' ESCAPE '\\'") == ["0"])
        }
    }

    /// The same rows, written at version 13 through bound parameters (either engine).
    static func insertSchema13Rows(_ conn: any CatalogConnection, a: String, b: String) throws {
        let manifest = try Digest(parsing: b)
        try conn.run("INSERT INTO repositories(id, name, created_at) VALUES(1, 'team/model', 1)")
        try conn.run(
            "INSERT INTO manifests(repo_id, digest, media_type, content, created_at) VALUES(1, ?, 'application/vnd.oci.image.manifest.v1+json', ?, 1)",
            .hash(manifest.bytes), .blob(Array("{}".utf8)))
        try conn.run(
            "INSERT INTO pipeline_runs(id, pipeline, repository, trigger_digest, created_at) VALUES(1, 'p', 'team/model', ?, 2)", .text(a))
        try conn.run(
            "INSERT INTO pipeline_runs(id, pipeline, repository, trigger_digest, created_at) VALUES(2, 'p', 'team/model', 'not-a-digest', 2)"
        )
        try conn.run(
            """
            INSERT INTO jobs(id, run_id, pipeline, stage, kind, spec, state, input_repository, input_digest, max_attempts, timeout_ms,
                             output_digest, log_digest, created_at, updated_at)
                VALUES(7, 1, 'p', 's', 'exec', '{}', 'succeeded', 'team/model', ?, 1, 1000, ?, NULL, 3, 4)
            """, .text(a), .text(b))
        try conn.run("INSERT INTO job_outputs(job_key, repository, digest, created_at) VALUES('k', 'team/model', ?, 5)", .text(b))
        try conn.run(
            """
            INSERT INTO deployments(id, repository, environment, model_name, stable_digest, canary_digest, weight, created_at, updated_at)
                VALUES(1, 'team/model', 'production', 'm', ?, NULL, 0, 6, 6)
            """, .text(b))
        try conn.run("INSERT INTO deployment_versions(deployment_id, digest, version) VALUES(1, ?, 1)", .text(b))
        try conn.run(
            """
            INSERT INTO rollouts(id, deployment_id, stable_digest, canary_digest, state, steps, step_index, weight, analysis_ms,
                                 step_started_at, started_by, created_at) VALUES(1, 1, NULL, ?, 'promoted', '[100]', 0, 100, 1, 7, 'me', 7)
            """, .text(b))
        try conn.run("INSERT INTO deployment_nodes(deployment_id, node, digest, seen_at) VALUES(1, 'n1', ?, 8)", .text(b))
        try conn.run(
            "INSERT INTO served_intervals(id, deployment_id, digest, role, weight, from_at) VALUES(1, 1, ?, 'stable', 100, 9)", .text(b))
    }

    /// What the records and the joins read after migration 14 (either engine).
    static func expectMigrated14(_ conn: any CatalogConnection, a: String, b: String) throws {
        #expect(try Schema.version(conn) == Database.schemaVersion)
        // The records read what was written, a value that was not a digest included.
        #expect(try conn.pipelineRun(1)?.triggerDigest == a)
        #expect(try conn.pipelineRun(2)?.triggerDigest == "not-a-digest")
        let job = try conn.job(7)
        #expect(job?.inputDigest == a && job?.outputDigest == b && job?.logDigest == nil)
        #expect(try conn.jobOutput(key: "k")?.digest == b)
        #expect(try conn.isJobOutput(b))
        #expect(try conn.deployment(id: 1)?.stable == b)
        #expect(try conn.existingDeploymentVersion(1, digest: b) == 1)
        #expect(try conn.rollout(1)?.canary == b)
        #expect(try conn.nodes(deployment: 1).map(\.digest) == [b])
        #expect(try conn.served(digest: b, limit: 5).map(\.digest) == [b])
        // The bytes join: the deployed manifest counts as deployed and GC keeps it.
        #expect(try conn.isDeployed(try Digest(parsing: b)))
        #expect(try conn.unkeptManifests(createdBefore: .max).isEmpty, "the deployed manifest is kept")
    }

    @Test(.enabled(if: Database.isTestingOnPostgres, "needs the suite's PostgreSQL (scripts/test-postgres.sh)"))
    func aPostgresSchema13CatalogMovesFeatureDigestsToBytes() throws {
        let settings = PostgresSettings(
            url: Database.testPostgresURL!, schema: "migrate14_\(UInt32.random(in: 0...UInt32.max))", poolSize: 2)
        defer { try? Database.dropSchema(settings) }
        let a = "sha256:" + String(repeating: "a", count: 64)
        let b = "sha256:" + String(repeating: "b", count: 64)
        try PostgresPool(settings).with { conn in
            try PostgresSchema.migrate(conn, upTo: 13)
            #expect(try Schema.version(conn) == 13)
            try Self.insertSchema13Rows(conn, a: a, b: b)
        }
        let db = try Database(location: .postgres(settings))
        try db.read { (conn: any CatalogConnection) throws -> Void in
            var types: Set<String> = []
            try conn.query(
                """
                SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema()
                AND (column_name LIKE '%\\_digest' OR column_name = 'digest') AND table_name <> 'audit_log'
                """
            ) { types.insert($0.text(0)) }
            #expect(types == ["bytea"])
            try Self.expectMigrated14(conn, a: a, b: b)
        }
    }

    @Test func aFreshCatalogIsAtTheLatestVersion() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try db.read { try Schema.version($0) } == Database.schemaVersion)
    }
}

/// One schema version means one set of tables and columns, whichever engine holds them.
@Suite struct SchemaParityTests {
    static func columns(_ db: Database) throws -> [String: Set<String>] {
        try db.read { conn in
            var out: [String: Set<String>] = [:]
            switch conn.dialect {
            case .sqlite:
                var tables: [String] = []
                try conn.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") {
                    tables.append($0.text(0))
                }
                for t in tables {
                    try conn.query("SELECT name FROM pragma_table_info(?)", .text(t)) { out[t, default: []].insert($0.text(0)) }
                }
            case .postgres:
                try conn.query(
                    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                ) { out[$0.text(0), default: []].insert($0.text(1)) }
                // PostgreSQL's own bookkeeping: the version table and sqlite_sequence's stand-in.
                out["depot_schema"] = nil
                out["catalog_sequences"] = nil
            }
            return out
        }
    }

    @Test(.enabled(if: Database.isTestingOnPostgres, "needs the suite's PostgreSQL (scripts/test-postgres.sh)"))
    func sqliteAndPostgresHaveTheSameTablesAndColumns() throws {
        let (postgres, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sqlite = try Database(location: .sqlite(path: dir + "/real-sqlite.db"))
        #expect(PostgresSchema.steps.last!.version == Database.schemaVersion, "a SQLite migration without its PostgreSQL twin")
        let a = try Self.columns(sqlite)
        let b = try Self.columns(postgres)
        #expect(a.keys.sorted() == b.keys.sorted())
        for table in a.keys.sorted() { #expect(a[table] == b[table], "\(table)") }
    }
}
