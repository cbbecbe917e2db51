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
        try await client.withAdmin { coordinator in
            var request = ListAdvertisersRequest(afterAdvertiserID: after, limit: 1_000)
            var listed = 0
            if !json { print("ADVERTISER            LIVE     TYPE    KEYS         BYTES       NEWEST   STATE       VERSIONS  CHANGED") }
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
        let type = switch a.liveHashType { case .md5: "md5"; case .sha256: "sha256"; default: "-" }
        return [pad(a.advertiserID, 21), pad(a.liveVersion == 0 ? "-" : "\(a.liveVersion)", 8), pad(type, 7), pad("\(a.liveKeys)", 12),
                pad(StatusFormat.bytes(Double(a.liveBytes)), 11), pad("\(a.latestVersion)", 8), pad(a.latestState.name, 11),
                pad("\(a.versions)", 9), changed].joined(separator: " ")
            + (a.maxShrink.map { String(format: "  max-shrink %g%%", $0 * 100) } ?? "")
    }
}

/// `roster export`: an advertiser's live list as sorted hex lines.
struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write an advertiser's live list as sorted hex lines, one distinct hash per line.",
        discussion: """
            Reads MatchAdmin.Export from the match server in pages of 65,536 keys, all
            from one version: if a new version goes live meanwhile, the export stops with
            an error (run it again). Needs the match server's admin token (--admin-token
            or $ROSTER_ADMIN_TOKEN).

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
                if request.version == 0, page.hashType == .sha256 {
                    FileHandle.standardError.write(Data("note: \(advertiser) holds SHA-256 hashes; each line is a hash's first 16 bytes (32 hex digits), the key served, not the hash\n".utf8))
                }
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
            Calls IngestAdmin.Rollback: the match server swaps the earlier version in
            atomically (a query sees the old list or the new, never a mix), then the
            catalog records it live and the version it replaced retired. Only versions
            whose segments the coordinator keeps can come back (coordinator
            --keep-versions, default 1: the one before the live one). A later file dropped
            into the lake replaces the list as usual.

            Examples:
              roster rollback --advertiser acme          # the version before the live one
              roster rollback --advertiser acme --to 41  # a given one (roster status
                                                         #   --advertiser acme lists them)
            """)

    @OptionGroup var client: CoordinatorClientOptions

    @Option(help: "The advertiser id.")
    var advertiser: String

    @Option(help: "The version to serve (default: the newest earlier one still kept).")
    var to: UInt64 = 0

    func run() async throws {
        let response = try await client.admin("cannot roll back \(advertiser)") {
            try await $0.rollback(RollbackRequest(advertiserID: advertiser, version: to), options: $1)
        }
        print("\(advertiser): version \(response.version) is live again (it replaced version \(response.previousVersion))")
    }
}

/// `roster delete`: stop serving an advertiser and remove its data.
struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Stop serving an advertiser and remove its data; a file dropped into its folder later starts it again.",
        discussion: """
            Calls IngestAdmin.DeleteAdvertiser: the catalog marks it deleted (files in
            flight are abandoned, no version is kept for a rollback, garbage collection
            removes every segment and run), then the match server stops serving it. The
            files in the lake are left as they are: only a new file (newer than every
            earlier one) starts the advertiser again.

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
        let response = try await client.admin("cannot delete \(advertiser)") {
            try await $0.deleteAdvertiser(DeleteAdvertiserRequest(advertiserID: advertiser), options: $1)
        }
        let live = response.removedVersion == 0 ? "no version was live" : "version \(response.removedVersion) is no longer served"
        print("\(advertiser): deleted; \(live); the data of its \(response.versions) version(s) is being removed")
    }
}

/// `roster approve`: publish a version the shrink guard held.
struct ApproveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve",
        abstract: "Publish a list version the shrink guard held (it had no keys, or far fewer than the live list).",
        discussion: """
            Calls IngestAdmin.Approve. A new version that would lose more of the live
            list's keys than the coordinator's --max-shrink allows (50% by default; an
            empty file, a header only, a truncated export) is held, not published: the
            live list keeps serving, and `roster status` names it. Approving it publishes
            it as any other version; a newer file dropped into the lake replaces it
            instead.

            Examples:
              roster approve --advertiser acme               # its newest held version
              roster approve --advertiser acme --version 42
            """)

    @OptionGroup var client: CoordinatorClientOptions

    @Option(help: "The advertiser id.")
    var advertiser: String

    @Option(help: "The held version to publish (default: the advertiser's newest held one).")
    var version: UInt64 = 0

    func run() async throws {
        let response = try await client.admin("cannot approve a version of \(advertiser)") {
            try await $0.approve(ApproveRequest(advertiserID: advertiser, version: version), options: $1)
        }
        let live = response.liveKeys == 0 ? "" : " (the live version has \(response.liveKeys))"
        print("\(advertiser): version \(response.version) approved, \(response.keys) keys\(live); it goes live within a publish round")
    }
}

/// `roster max-shrink`: one advertiser's own shrink guard.
struct MaxShrinkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "max-shrink",
        abstract: "Set how much smaller than its live list an advertiser's new version may be without approval.",
        discussion: """
            Calls IngestAdmin.SetMaxShrink. The coordinator's --max-shrink (50% by
            default) applies to every advertiser without its own. 100% turns the guard off
            for this advertiser (a list that really may be emptied; to stop serving one,
            `roster delete`); 0% holds any shrink. `roster advertisers` shows the
            advertisers' own values.

            Examples:
              roster max-shrink --advertiser acme 90%
              roster max-shrink --advertiser acme --default
            """)

    @OptionGroup var client: CoordinatorClientOptions

    @Option(help: "The advertiser id.")
    var advertiser: String

    @Argument(help: "The share of the live list's keys a new version may lose: 90%, 0.9 (0%–100%).")
    var share: ShareArgument?

    @Flag(name: .customLong("default"), help: "Forget the advertiser's own value: the coordinator's --max-shrink applies.")
    var useDefault = false

    func validate() throws {
        guard (share != nil) != useDefault else { throw ValidationError("give a share (90%) or --default, not both or neither") }
    }

    func run() async throws {
        let request = SetMaxShrinkRequest(advertiserID: advertiser, maxShrink: share?.share ?? 0, useDefault: useDefault)
        _ = try await client.admin("cannot set the shrink guard of \(advertiser)") { try await $0.setMaxShrink(request, options: $1) }
        print(useDefault ? "\(advertiser): the coordinator's --max-shrink applies"
              : "\(advertiser): a new version may lose up to \(String(format: "%g", (share?.share ?? 0) * 100))% of the live list's keys without approval")
    }
}
