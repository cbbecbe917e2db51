import ArgumentParser
import Foundation
import HexDigits
import RosterAPI
import RosterClient

/// `roster advertisers`: every advertiser the coordinator knows, a page at a time.
struct AdvertisersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "advertisers",
        abstract: "List advertisers: live version, keys, bytes, newest version and when it last changed.",
        discussion: """
            Calls IngestAdmin.ListAdvertisers page by page (1,000 a call).

            Examples:
              roster advertisers
              roster advertisers --after acme --limit 50
              roster advertisers --json
            """)

    @OptionGroup var client: CoordinatorClientOptions

    @Option(help: "Start after this advertiser id.")
    var after: String = ""

    @Option(help: "List at most this many (0: all).")
    var limit: Int = 0

    @Flag(help: "Print one JSON object per advertiser (JSON lines).")
    var json = false

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be 0 (all) or more") }
    }

    func run() async throws {
        try await withCoordinator(client.coordinator, tls: try client.clientTLS()) { transport in
            let coordinator = IngestAdmin.Client(transport: transport)
            var request = ListAdvertisersRequest(afterAdvertiserID: after, limit: 1_000)
            var listed = 0
            if !json { print("ADVERTISER            LIVE     KEYS         BYTES       NEWEST   STATE       VERSIONS  CHANGED") }
            repeat {
                if limit > 0 { request.limit = UInt32(min(1_000, limit - listed)) }
                let page = try await userFacing("cannot list advertisers") {
                    try await coordinator.listAdvertisers(request, options: client.operatorOptions())
                }
                for advertiser in page.advertisers {
                    print(json ? advertiser.jsonText(includeDefaults: true).replacingOccurrences(of: "\n", with: "") : Self.line(advertiser))
                }
                listed += page.advertisers.count
                request.afterAdvertiserID = page.nextAfterAdvertiserID
            } while !request.afterAdvertiserID.isEmpty && (limit == 0 || listed < limit)
            if !json { print("\(listed) advertisers") }
        }
    }

    static func line(_ a: AdvertiserSummary) -> String {
        func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
        let changed = a.changedAtMs == 0 ? "-" : ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(a.changedAtMs) / 1000))
        return [pad(a.advertiserID, 21), pad(a.liveVersion == 0 ? "-" : "\(a.liveVersion)", 8), pad("\(a.liveKeys)", 12),
                pad(StatusFormat.bytes(Double(a.liveBytes)), 11), pad("\(a.latestVersion)", 8), pad(a.latestState.name, 11),
                pad("\(a.versions)", 9), changed].joined(separator: " ")
    }
}

/// `roster export`: an advertiser's live list as sorted hex lines.
struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write an advertiser's live list as sorted hex lines, one distinct hash per line.",
        discussion: """
            Reads MatchAdmin.Export from the match server in pages of 65,536 keys, all from one
            version: if a new version goes live meanwhile, the export stops with an error (run it
            again). Needs the match server's admin token (--admin-token or $ROSTER_ADMIN_TOKEN).

            Examples:
              roster export --advertiser acme > acme.txt
              roster export --advertiser acme --output acme.txt
            """)

    @OptionGroup var client: AdminClientOptions

    @Option(help: "The advertiser id.")
    var advertiser: String

    @Option(help: "Write here instead of standard output (written whole, then renamed into place).")
    var output: String?

    func run() async throws {
        let destination: FileHandle?
        var temporary: String?
        if let output {
            let path = output + ".partial"
            guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
                throw CLIError("cannot write \(path)")
            }
            destination = handle
            temporary = path
        } else {
            destination = nil // standard output
        }
        do {
            let (count, version) = try await export(to: destination)
            if let temporary, let output, let destination {
                try destination.close()
                // rename(2) replaces an existing file atomically, and needs none there.
                guard rename(temporary, output) == 0 else {
                    throw CLIError("cannot move \(temporary) to \(output): \(String(cString: strerror(errno)))")
                }
                FileHandle.standardError.write(Data("exported \(count) hashes of \(advertiser) (version \(version)) to \(output)\n".utf8))
            }
        } catch {
            if let temporary { try? FileManager.default.removeItem(atPath: temporary) }
            throw error
        }
    }

    /// Writes the list to `destination`, or to standard output when nil.
    private func export(to destination: FileHandle?) async throws -> (count: Int, version: UInt64) {
        try await withRPCClient(client.match, tls: try client.clientTLS()) { transport in
            let admin = MatchAdmin.Client(transport: transport)
            var request = ExportRequest(advertiserID: advertiser)
            var count = 0
            var text: [UInt8] = []
            repeat {
                let page = try await userFacing("cannot export \(advertiser)") { try await admin.export(request, options: client.adminOptions()) }
                request.version = page.version
                request.after = page.nextAfter
                text.removeAll(keepingCapacity: true)
                page.hashes.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
                    for start in stride(from: 0, to: bytes.count, by: 16) {
                        HexDigits.appendLowercase(UnsafeRawBufferPointer(rebasing: bytes[start..<start + 16]), to: &text)
                        text.append(UInt8(ascii: "\n"))
                    }
                }
                if let destination { try destination.write(contentsOf: Data(text)) } else { writeStandardOutput(Data(text)) }
                count += page.hashes.count / 16
            } while !request.after.isEmpty
            return (count, request.version)
        }
    }
}

/// `roster rollback`: serve an advertiser's previous version again.
struct RollbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollback",
        abstract: "Serve an advertiser's previous list version again, at once (no re-ingest).",
        discussion: """
            Calls IngestAdmin.Rollback: the match server swaps the earlier version in atomically
            (a query sees the old list or the new, never a mix), then the catalog records it live
            and the version it replaced retired. Only versions whose segments the coordinator
            keeps can come back (coordinator --keep-versions, default 1: the one before the live
            one). A later file dropped into the lake replaces the list as usual.

            Examples:
              roster rollback --advertiser acme              # the version before the live one
              roster rollback --advertiser acme --to 41      # a given version (roster advertisers, roster call IngestAdmin.ListFiles)
            """)

    @OptionGroup var client: CoordinatorClientOptions

    @Option(help: "The advertiser id.")
    var advertiser: String

    @Option(help: "The version to serve (default: the newest earlier one still kept).")
    var to: UInt64 = 0

    func run() async throws {
        try await withCoordinator(client.coordinator, tls: try client.clientTLS()) { transport in
            let coordinator = IngestAdmin.Client(transport: transport)
            let response = try await userFacing("cannot roll back \(advertiser)") {
                try await coordinator.rollback(RollbackRequest(advertiserID: advertiser, version: to), options: client.operatorOptions())
            }
            print("\(advertiser): version \(response.version) is live again (it replaced version \(response.previousVersion))")
        }
    }
}

/// `roster delete`: stop serving an advertiser and remove its data.
struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Stop serving an advertiser and remove its data; a file dropped into its folder later starts it again.",
        discussion: """
            Calls IngestAdmin.DeleteAdvertiser: the catalog marks it deleted (files in flight are
            abandoned, no version is kept for a rollback, garbage collection removes every segment
            and run), then the match server stops serving it. The files in the lake are left as
            they are: only a new file (newer than every earlier one) starts the advertiser again.

            Examples:
              roster delete --advertiser acme --yes
            """)

    @OptionGroup var client: CoordinatorClientOptions

    @Option(help: "The advertiser id.")
    var advertiser: String

    @Flag(help: "Confirm: the list stops being served at once, and its data cannot be brought back.")
    var yes = false

    func validate() throws {
        guard yes else { throw ValidationError("deleting '\(advertiser)' stops serving it and removes its data for good: pass --yes to confirm") }
    }

    func run() async throws {
        try await withCoordinator(client.coordinator, tls: try client.clientTLS()) { transport in
            let coordinator = IngestAdmin.Client(transport: transport)
            let response = try await userFacing("cannot delete \(advertiser)") {
                try await coordinator.deleteAdvertiser(DeleteAdvertiserRequest(advertiserID: advertiser), options: client.operatorOptions())
            }
            let live = response.removedVersion == 0 ? "no version was live" : "version \(response.removedVersion) is no longer served"
            print("\(advertiser): deleted; \(live); the data of its \(response.versions) version(s) is being removed")
        }
    }
}
