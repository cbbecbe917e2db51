import RosterAPI

/// The coordinator's catalog schema, one migration per version
/// (`PRAGMA user_version`). Append only: a released migration never changes.
enum CatalogSchema {
    static let migrations: [String] = [
        // 1: advertisers, files (one row per list version), tasks (parse
        // blocks and merge partitions), attempts (every lease of a task),
        // workers (last seen).
        """
        CREATE TABLE advertisers(
            id TEXT PRIMARY KEY,
            weight REAL NOT NULL DEFAULT 1,
            live_file_id INTEGER
        );
        CREATE TABLE files(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            advertiser_id TEXT NOT NULL REFERENCES advertisers(id),
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            etag TEXT NOT NULL,
            state INTEGER NOT NULL,
            submitted_at REAL NOT NULL,
            started_at REAL,
            live_at REAL,
            ended_at REAL,
            blocks_total INTEGER NOT NULL,
            merges_total INTEGER NOT NULL DEFAULT 0,
            distinct_keys INTEGER NOT NULL DEFAULT 0,
            error TEXT NOT NULL DEFAULT '',
            collected INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX files_by_path ON files(path, etag);
        CREATE INDEX files_by_state ON files(state);
        CREATE INDEX files_by_advertiser ON files(advertiser_id, id);
        CREATE TABLE tasks(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            file_id INTEGER NOT NULL REFERENCES files(id),
            kind INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            range_start INTEGER NOT NULL,
            range_end INTEGER NOT NULL,
            state INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_token TEXT,
            worker TEXT,
            lease_expires REAL,
            output TEXT,
            lines INTEGER NOT NULL DEFAULT 0,
            keys INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            output_keys INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            invalid TEXT NOT NULL DEFAULT '',
            samples TEXT NOT NULL DEFAULT '',
            done_at REAL,
            UNIQUE(file_id, kind, seq)
        );
        CREATE INDEX tasks_by_state ON tasks(state, file_id, kind, seq);
        CREATE TABLE attempts(
            task_id INTEGER NOT NULL REFERENCES tasks(id),
            attempt INTEGER NOT NULL,
            worker TEXT NOT NULL,
            leased_at REAL NOT NULL,
            ended_at REAL,
            outcome TEXT NOT NULL DEFAULT 'leased',
            error TEXT NOT NULL DEFAULT '',
            PRIMARY KEY(task_id, attempt)
        );
        CREATE TABLE workers(
            id TEXT PRIMARY KEY,
            last_seen REAL NOT NULL
        );
        """,
        // 2: retries back off (tasks.not_before); reported failures and
        // expired leases are counted apart (a worker killed mid-task is not
        // the file's fault); each advertiser remembers the newest file it
        // was given, so a deleted newest file never brings back an older one.
        """
        ALTER TABLE tasks ADD COLUMN not_before REAL;
        ALTER TABLE tasks ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE tasks ADD COLUMN expiries INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE advertisers ADD COLUMN newest_modified REAL;
        ALTER TABLE advertisers ADD COLUMN newest_path TEXT;
        ALTER TABLE files ADD COLUMN modified REAL;
        """,
        // 3: garbage collection looks at the files it has work for, not at
        // every live one (a partial index, used by `collectable`).
        """
        CREATE INDEX files_to_collect ON files(id)
            WHERE (state = 5 AND collected = 0) OR (state IN (6, 7, 8, 9) AND collected < 2);
        """,
        // 4: a merge's segment may be a slice of its version's pack file
        // (length 0: the whole file at `output`).
        """
        ALTER TABLE tasks ADD COLUMN output_offset INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE tasks ADD COLUMN output_length INTEGER NOT NULL DEFAULT 0;
        """,
    ]
}

/// A task's state in the `tasks` table.
enum TaskState: Int64 {
    case queued = 0
    case leased = 1
    case done = 2
    /// Its file version was abandoned: never leased again.
    case cancelled = 3
}

extension FileState {
    /// The state's name as Status reports, the CLI prints and docs use it.
    public var name: String {
        switch self {
        case .queued: "queued"
        case .parsing: "parsing"
        case .merging: "merging"
        case .publishing: "publishing"
        case .live: "live"
        case .failed: "failed"
        case .rejected: "rejected"
        case .superseded: "superseded"
        case .retired: "retired"
        case .unspecified: "?"
        case .unrecognized(let n): "state \(n)"
        }
    }
}

// MARK: States and kinds in SQL

/// How states and kinds appear in the catalog's SQL: by name in the Swift
/// source, as literal numbers in the statement text. Literal, not bound:
/// SQLite uses a partial index (`files_to_collect`) only for a query whose
/// WHERE clause repeats the index's predicate, which a `?` cannot.
protocol SQLLiteral {
    var sqlValue: Int64 { get }
}

extension SQLLiteral {
    /// The value as SQL text: `5`.
    var sql: String { String(sqlValue) }

    /// A parenthesised list for `IN`: `(1, 2, 3)`.
    static func sqlList(_ values: Self...) -> String {
        sqlList(values)
    }

    static func sqlList(_ values: [Self]) -> String {
        "(" + values.map(\.sql).joined(separator: ", ") + ")"
    }
}

extension FileState: SQLLiteral {
    var sqlValue: Int64 { Int64(rawValue) }
}

extension TaskKind: SQLLiteral {
    var sqlValue: Int64 { Int64(rawValue) }
}

extension TaskState: SQLLiteral {
    var sqlValue: Int64 { rawValue }
}
