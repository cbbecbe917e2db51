import Foundation
import RosterAPI
import RosterClient
import TestSupport
import XCTest

/// The `roster` binary, run as a subprocess the way users run it.
final class CLITests: ServicesTestCase {
    override class var folderPrefix: String { "roster-cli" }

    private func emails(_ range: Range<Int>) -> [String] { range.map { "user\($0)@example.com" } }

    private func listFile(_ emails: [String]) -> String {
        "email_md5\n" + emails.map { MemberHash(email: $0).hex + "\n" }.joined()
    }

    private func drop(_ text: String, advertiser: String, name: String, lake: URL) throws {
        let folder = lake.appendingPathComponent(advertiser)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        // Written under a temporary name and renamed, as the lake layout asks.
        let temporary = folder.appendingPathComponent(".\(name).tmp")
        try Data(text.utf8).write(to: temporary)
        try FileManager.default.moveItem(at: temporary, to: folder.appendingPathComponent(name))
    }

    private func startDev(_ extra: [String] = []) throws -> (dev: RosterService, match: String, coordinator: String) {
        let dev = try RosterService(["dev", "--data", root.path, "--match-port", "0", "--coordinator-port", "0", "--metrics", "127.0.0.1:0",
                                     "--scan-interval", "0.2", "--block-size", "1024", "--workers", "2"] + extra)
        services.append(dev)
        let match = try dev.waitForLine("match server:")
        let coordinator = try dev.waitForLine("coordinator:")
        return (dev, match, coordinator)
    }

    func testDevIngestsADroppedFileAndAnswersMatches() throws {
        let (dev, match, coordinator) = try startDev()
        XCTAssertTrue(dev.stdout.contains("lake:"), dev.stdout)
        let members = emails(0..<300)
        try drop(listFile(members), advertiser: "acme", name: "members.txt", lake: root.appendingPathComponent("lake"))

        try eventually("the dropped file to be served") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", " User7@Example.COM "]).status == 0
        }
        let hit = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--hash", MemberHash(email: members[42]).hex])
        XCTAssertEqual(hit.status, 0, hit.stderr)
        XCTAssertTrue(hit.stdout.contains("is a member of acme"), hit.stdout)
        let miss = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", "stranger@example.com"])
        XCTAssertEqual(miss.status, 3, "not a member: exit 3")
        XCTAssertTrue(miss.stdout.contains("is not a member"), miss.stdout)

        // --advertisers asks one hash of many lists (MatchAdvertisers), a line each in order.
        let across = try RosterBinary.run(["match", "--match", match, "--advertisers", "acme, ghost,acme", "--email", members[3]])
        XCTAssertEqual(across.status, 3, "ghost has no list: exit 3 (\(across.stderr))")
        XCTAssertEqual(across.stdout, "acme\tmember\nghost\tno list\nacme\tmember\n")
        XCTAssertEqual(across.stderr, "\(MemberHash(email: members[3]).hex) is a member of 2 of 3 advertisers\n")
        let idsFile = root.appendingPathComponent("ids.txt")
        try Data("acme\n\nacme\n".utf8).write(to: idsFile)
        let fromFile = try RosterBinary.run(["match", "--match", match, "--advertisers", "@" + idsFile.path, "--email", members[3], "--json"])
        XCTAssertEqual(fromFile.status, 0, fromFile.stderr)
        XCTAssertEqual(fromFile.stdout.components(separatedBy: "\"matched\": true").count - 1, 2, fromFile.stdout)
        let strangerAcross = try RosterBinary.run(["match", "--match", match, "--advertisers", "acme", "--email", "stranger@example.com"])
        XCTAssertEqual(strangerAcross.stdout, "acme\tnot a member\n")

        // --file asks through MatchMany.
        let hashes = root.appendingPathComponent("ask.txt")
        try Data((emails(290..<310).map { MemberHash(email: $0).hex }.joined(separator: "\n")).utf8).write(to: hashes)
        let many = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--file", hashes.path])
        XCTAssertEqual(many.status, 3, many.stderr)
        // The summary goes to standard error: standard output is TSV alone.
        XCTAssertEqual(many.stderr, "10 of 20 are members of acme\n")
        let answers = many.stdout.split(separator: "\n")
        XCTAssertEqual(answers.count, 20, many.stdout)
        XCTAssertTrue(answers.allSatisfy { $0.split(separator: "\t").count == 2 }, many.stdout)
        XCTAssertEqual(answers.first.map(String.init), MemberHash(email: emails(290..<291)[0]).hex + "\tmember", "in the file's order")
        XCTAssertEqual(answers[19], MemberHash(email: emails(309..<310)[0]).hex + "\tnot a member")
        // The lake's own file, header line and all, by ingest's rules.
        let lakeFile = root.appendingPathComponent("lake/acme/members.txt").path
        let all = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--file", lakeFile, "--json"])
        XCTAssertEqual(all.status, 0, all.stderr)
        XCTAssertEqual(all.stdout.components(separatedBy: "\"matched\": true").count - 1, 300, all.stdout)
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(all.stdout.utf8)), all.stdout)
        // A reader that goes away early (`| head -1`) ends the command quietly: 141, as SIGPIPE would, no crash.
        // 20,000 answers (900 KB) outgrow the pipe's buffer, so roster is
        // still writing when head has gone; export's 300 lines may fit (0).
        let big = root.appendingPathComponent("big-ask.txt")
        try Data((0..<20_000).map { MemberHash(email: "ask\($0)@example.com").hex }.joined(separator: "\n").utf8).write(to: big)
        let pipedCommands: [([String], [Int32])] = [(["match", "--match", match, "--advertiser", "acme", "--file", big.path], [141]),
                                                    (["export", "--match", match, "--advertiser", "acme"], [0, 141])]
        for (args, statuses) in pipedCommands {
            let piped = try RosterBinary.runPiped(args, into: ["head", "-c", "10"])
            XCTAssertEqual(piped.stdout.count, 10, piped.stdout)
            XCTAssertTrue(statuses.contains(piped.status), "roster \(args[0]) | head: \(piped.status) \(piped.stderr)")
            XCTAssertFalse(piped.stderr.contains("Fatal error") || piped.stderr.contains("Backtrace"), piped.stderr)
        }

        let status = try RosterBinary.run(["status", "--coordinator", coordinator])
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertTrue(status.stdout.contains("acme/members.txt"), status.stdout)
        XCTAssertTrue(status.stdout.contains("live"), status.stdout)
        XCTAssertTrue(status.stdout.contains("300 keys"), status.stdout)

        // The metrics of all three services in one dev process: the catalog's
        // gauges, the workers' counters, the match server's lists; promtool-clean.
        let pageURL = String(try dev.waitForLine("status page:").split(separator: " ")[0])
        let metrics = try String(contentsOf: URL(string: pageURL + "metrics")!, encoding: .utf8)
        for expected in [#"roster_ingest_files{state="live"} 1"#, #"roster_ingest_tasks{state="queued"} 0"#,
                         "roster_ingest_time_to_live_seconds_count 1", "roster_match_lists 1", "roster_match_keys 300",
                         #"roster_worker_tasks_total{kind="parse",outcome="done"}"#, "roster_worker_parsed_keys_total 300",
                         #"roster_ingest_task_attempts_total{kind="parse"}"#] {
            XCTAssertTrue(metrics.contains(expected), "\(expected) in \(metrics)")
        }
        try Promtool.check(metrics)

        // --watch ends once every file has finished, with the final table
        // (with nothing in flight and no wait for work: at once).
        let watched = try RosterBinary.run(["status", "--watch", "--wait-for-work", "0", "--coordinator", coordinator])
        XCTAssertEqual(watched.status, 0, watched.stderr)
        XCTAssertTrue(watched.stdout.contains("[####################]"), watched.stdout)
        XCTAssertTrue(watched.stdout.contains("ID      PATH"), "final table: \(watched.stdout)")

        // The advertisers, and acme's list exported: sorted, distinct, whole.
        let advertisers = try RosterBinary.run(["advertisers", "--coordinator", coordinator])
        XCTAssertEqual(advertisers.status, 0, advertisers.stderr)
        let acmeLine = advertisers.stdout.split(separator: "\n").first { $0.hasPrefix("acme ") }.map(String.init) ?? ""
        XCTAssertTrue(acmeLine.contains(" 300 ") && acmeLine.contains("live"), advertisers.stdout)
        let exported = try RosterBinary.run(["export", "--match", match, "--advertiser", "acme"])
        XCTAssertEqual(exported.status, 0, exported.stderr)
        XCTAssertEqual(exported.stdout, members.map { MemberHash(email: $0).hex }.sorted().joined(separator: "\n") + "\n")
        let unknown = try RosterBinary.run(["load", "--match", match, "--advertiser", "nobody", "--rate", "10", "--duration", "1s"])
        XCTAssertEqual(unknown.status, 69, unknown.stderr)
        XCTAssertTrue(unknown.stderr.hasPrefix("Error: advertiser 'nobody' has no list on the match server at "), unknown.stderr)
        let exportFile = root.appendingPathComponent("acme-live.txt").path
        for round in 0..<2 {  // a new file, then one replaced
            let written = try RosterBinary.run(["export", "--match", match, "--advertiser", "acme", "--output", exportFile])
            XCTAssertEqual(written.status, 0, "round \(round): \(written.stderr)")
            XCTAssertEqual(try String(contentsOfFile: exportFile, encoding: .utf8), exported.stdout)
            XCTAssertFalse(FileManager.default.fileExists(atPath: exportFile + ".partial"))
        }
        let nobody = try RosterBinary.run(["export", "--match", match, "--advertiser", "nobody"])
        XCTAssertEqual(nobody.status, 69, "NOT_FOUND: 64 + 5: \(nobody.stderr)")

        // The README's tour: --watch started before a file lands waits for
        // it, follows it, and ends when it is live — even when the file goes
        // from unknown to live between two of its polls (a 20-line file does,
        // here, most times): a version newer than any it first saw is work.
        let watcher = try RosterService(["status", "--watch", "--wait-for-work", "120", "--coordinator", coordinator])
        services.append(watcher)
        _ = try watcher.waitForLine("waiting for a file to ingest")
        try drop(listFile(emails(500..<520)), advertiser: "zeta", name: "late.txt", lake: root.appendingPathComponent("lake"))
        try eventually("--watch to end once the new file is live") { !watcher.isRunning }
        XCTAssertEqual(watcher.stop(), 0, watcher.stderr)
        XCTAssertTrue(watcher.stdout.contains("zeta/late.txt"), watcher.stdout)
        XCTAssertTrue(watcher.stdout.contains("20 keys"), watcher.stdout)

        let again = try RosterBinary.run(["submit", "--coordinator", coordinator, "acme/members.txt"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stdout.contains("already known"), again.stdout)

        // A replacement goes live through `submit --wait` (200 keys for 300:
        // within the shrink guard's 50%).
        try drop(listFile(emails(1000..<1200)), advertiser: "acme", name: "v2.txt", lake: root.appendingPathComponent("lake"))
        let submitted = try RosterBinary.run(["submit", "--coordinator", coordinator, "acme/v2.txt", "--wait"])
        XCTAssertEqual(submitted.status, 0, submitted.stderr)
        XCTAssertTrue(submitted.stdout.contains("live"), submitted.stdout)
        let replaced = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[0]])
        XCTAssertEqual(replaced.status, 3, "the old list is gone")

        // A rollback serves the previous version again at once (its segments
        // are kept: --keep-versions 1), and rolling back again the newer one.
        func ask(_ email: String) throws -> Int32 {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", email]).status
        }
        let back = try RosterBinary.run(["rollback", "--coordinator", coordinator, "--advertiser", "acme"])
        XCTAssertEqual(back.status, 0, back.stderr)
        XCTAssertTrue(back.stdout.hasPrefix("acme: version ") && back.stdout.contains("is live again"), back.stdout)
        XCTAssertEqual(try ask(members[0]), 0, "the old list answers again, with no re-ingest")
        XCTAssertEqual(try ask(emails(1000..<1001)[0]), 3)
        let listed = try RosterBinary.run(["advertisers", "--coordinator", coordinator, "--json"])
        let acme = try XCTUnwrap(listed.stdout.split(separator: "\n").first { $0.contains("\"acme\"") }.map(String.init), listed.stdout)
        XCTAssertTrue(acme.contains("\"liveKeys\": \"300\"") || acme.contains("\"liveKeys\":\"300\""), "the catalog agrees: \(acme)")
        let forward = try RosterBinary.run(["rollback", "--coordinator", coordinator, "--advertiser", "acme"])
        XCTAssertEqual(forward.status, 0, forward.stderr)
        XCTAssertEqual(try ask(emails(1000..<1001)[0]), 0, "and forward again")
        let gone = try RosterBinary.run(["rollback", "--coordinator", coordinator, "--advertiser", "acme", "--to", "999"])
        XCTAssertEqual(gone.status, 69, "NOT_FOUND: 64 + 5: \(gone.stderr)")
        XCTAssertEqual(gone.stderr, "Error: cannot roll back acme: NOT_FOUND: advertiser 'acme' has no version 999\n")

        // Delete: confirmed, then neither served nor listed; a new file starts it again.
        let unconfirmed = try RosterBinary.run(["delete", "--coordinator", coordinator, "--advertiser", "acme"])
        XCTAssertEqual(unconfirmed.status, 64)
        XCTAssertTrue(unconfirmed.stderr.contains("pass --yes to confirm"), unconfirmed.stderr)
        let deleted = try RosterBinary.run(["delete", "--coordinator", coordinator, "--advertiser", "acme", "--yes"])
        XCTAssertEqual(deleted.status, 0, deleted.stderr)
        XCTAssertTrue(deleted.stdout.hasPrefix("acme: deleted; version "), deleted.stdout)
        XCTAssertEqual(try ask(emails(1000..<1001)[0]), 69, "NOT_FOUND: nothing is served for acme")
        XCTAssertFalse(try RosterBinary.run(["advertisers", "--coordinator", coordinator]).stdout.contains("acme "))
        let twice = try RosterBinary.run(["delete", "--coordinator", coordinator, "--advertiser", "acme", "--yes"])
        XCTAssertEqual(twice.status, 69, twice.stderr)
        try drop(listFile(emails(2000..<2005)), advertiser: "acme", name: "v3.txt", lake: root.appendingPathComponent("lake"))
        try eventually("a new file to start acme again") { try ask(emails(2000..<2001)[0]) == 0 }
        XCTAssertEqual(try ask(members[0]), 3, "only the new list")

        // Ctrl-C stops everything cleanly.
        XCTAssertEqual(dev.stop(SIGINT), 0, dev.stderr)
        XCTAssertTrue(dev.stdout.contains("roster dev stopped."), dev.stdout)
    }

    /// The shrink guard through the binary: a truncated export (a header
    /// line only) dropped over a live list is held — the old list keeps
    /// answering — and said in status, the metrics and the log; `roster
    /// approve` publishes it; an advertiser's own `max-shrink 100%` lets an
    /// empty list through with no approval.
    /// A list of SHA-256s beside one of MD5s: an email is hashed with each
    /// list's type, a hash of the other type is refused naming the list's,
    /// and `roster advertisers` says which type each list holds.
    func testASHA256ListIsAskedByEmailAndListedWithItsType() throws {
        let (_, match, coordinator) = try startDev()
        let members = emails(0..<200)
        let lake = root.appendingPathComponent("lake")
        try drop(listFile(members), advertiser: "acme", name: "members.txt", lake: lake)
        try drop("email_sha256\n" + members.map { MemberHash(email: $0, type: .sha256).hex + "\n" }.joined(),
                 advertiser: "shop", name: "members.txt", lake: lake)
        try eventually("both lists to be served") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "shop", "--email", " User7@Example.COM "]).status == 0
                && RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", "user7@example.com"]).status == 0
        }
        let hit = try RosterBinary.run(["match", "--match", match, "--advertiser", "shop", "--email", members[42]])
        XCTAssertEqual(hit.stdout.prefix(64), Substring(MemberHash(email: members[42], type: .sha256).hex), "asked as SHA-256: \(hit.stdout)")
        XCTAssertTrue(hit.stdout.contains("is a member of shop"), hit.stdout)
        let miss = try RosterBinary.run(["match", "--match", match, "--advertiser", "shop", "--email", "stranger@example.com"])
        XCTAssertEqual(miss.status, 3, miss.stderr)
        let sha = try RosterBinary.run(["match", "--match", match, "--advertiser", "shop", "--hash", MemberHash(email: members[1], type: .sha256).hex])
        XCTAssertEqual(sha.status, 0, sha.stderr)
        let wrongWidth = try RosterBinary.run(["match", "--match", match, "--advertiser", "shop", "--hash", MemberHash(email: members[1]).hex])
        XCTAssertEqual(wrongWidth.status, 67, "a failed call: 64 + INVALID_ARGUMENT's 3")
        XCTAssertEqual(wrongWidth.stderr, "Error: match failed: INVALID_ARGUMENT: advertiser 'shop' holds SHA-256 hashes: 32 bytes, got 16 (an MD5)\n")

        // One email across both types, and one MD5 across both.
        let across = try RosterBinary.run(["match", "--match", match, "--advertisers", "acme,shop,ghost", "--email", members[3]])
        XCTAssertEqual(across.stdout, "acme\tmember\nshop\tmember\nghost\tno list\n", across.stderr)
        let md5Across = try RosterBinary.run(["match", "--match", match, "--advertisers", "acme,shop", "--hash", MemberHash(email: members[3]).hex])
        XCTAssertEqual(md5Across.stdout, "acme\tmember\nshop\tno list of this hash type\n", md5Across.stderr)

        // A file of SHA-256 lines asks with MatchMany, answers in its order, hashes whole.
        let ask = root.appendingPathComponent("ask-sha.txt")
        try Data((emails(190..<210).map { MemberHash(email: $0, type: .sha256).hex }.joined(separator: "\n")).utf8).write(to: ask)
        let many = try RosterBinary.run(["match", "--match", match, "--advertiser", "shop", "--file", ask.path])
        XCTAssertEqual(many.status, 3, many.stderr)
        XCTAssertEqual(many.stderr, "10 of 20 are members of shop\n")
        XCTAssertEqual(many.stdout.split(separator: "\n").first.map(String.init), MemberHash(email: members[190], type: .sha256).hex + "\tmember")

        // Export writes the keys served, and says so for a SHA-256 list.
        let exported = try RosterBinary.run(["export", "--match", match, "--advertiser", "shop"])
        XCTAssertEqual(exported.status, 0, exported.stderr)
        XCTAssertTrue(exported.stderr.hasPrefix("note: shop holds SHA-256 hashes; each line is a hash's first 16 bytes"), exported.stderr)
        let keys = exported.stdout.split(separator: "\n")
        XCTAssertEqual(keys.count, 200)
        XCTAssertTrue(keys.contains(Substring(MemberHash(email: members[9], type: .sha256).hex.prefix(32))))
        XCTAssertEqual(try RosterBinary.run(["export", "--match", match, "--advertiser", "acme"]).stderr, "", "nothing to say of MD5")

        let advertisers = try RosterBinary.run(["advertisers", "--coordinator", coordinator]).stdout
        let line = { (id: String) in advertisers.split(separator: "\n").first { $0.hasPrefix(id + " ") }.map(String.init) ?? "" }
        XCTAssertTrue(line("shop").contains(" sha256 ") && line("shop").contains(" 200 "), advertisers)
        XCTAssertTrue(line("acme").contains(" md5 "), advertisers)
        let status = try RosterBinary.run(["status", "--coordinator", coordinator]).stdout
        XCTAssertTrue(status.contains("200 SHA-256 keys"), status)
        XCTAssertTrue(status.contains("200 keys"), "MD5, the common type, is not named: \(status)")
    }

    /// Drops `members` as acme's list file `name` and waits until the last
    /// is served; returns how `roster match --email` exits for an email.
    private func serve(_ members: [String], as name: String, match: String, lake: URL) throws -> (String) throws -> Int32 {
        try drop(listFile(members), advertiser: "acme", name: name, lake: lake)
        let ask = { (email: String) throws -> Int32 in
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", email]).status
        }
        try eventually("the list to be served") { try ask(members.last!) == 0 }
        return ask
    }

    /// `roster dev`: a delta dropped beside a list changes it in place,
    /// and `roster status --advertiser` tells a delta from a list.
    func testADeltaDroppedBesideAListChangesItAndStatusSaysSo() throws {
        let (_, match, coordinator) = try startDev()
        let lake = root.appendingPathComponent("lake")
        let members = emails(0..<200)
        let ask = try serve(members, as: "members.txt", match: match, lake: lake)
        let delta = "+" + MemberHash(email: "new@example.com").hex + "\n-" + MemberHash(email: members[5]).hex + "\n"
        try drop(delta, advertiser: "acme", name: "2026-12-06.delta", lake: lake)
        try eventually("the delta to be served") { try ask("new@example.com") == 0 }
        XCTAssertEqual(try ask(members[5]), 3, "removed")
        XCTAssertEqual(try ask(members[6]), 0, "the rest of the list serves on")
        let history = try RosterBinary.run(["status", "--coordinator", coordinator, "--advertiser", "acme"])
        let lines = history.stdout.split(separator: "\n")
        XCTAssertTrue(lines.count >= 3 && lines[1].contains("acme/2026-12-06.delta") && lines[1].contains("live")
                      && lines[1].contains("~200 keys") && lines[1].contains("delta on 1"), history.stdout)
        XCTAssertTrue(lines[2].contains("acme/members.txt") && lines[2].contains("retired"), history.stdout)
    }

    func testAnEmptiedListIsHeldUntilAnOperatorApprovesIt() throws {
        let (dev, match, coordinator) = try startDev()
        let lake = root.appendingPathComponent("lake")
        let members = emails(0..<200)
        let ask = try serve(members, as: "1.txt", match: match, lake: lake)

        try drop("email_md5\n", advertiser: "acme", name: "2.txt", lake: lake)
        let held = try RosterBinary.run(["submit", "--coordinator", coordinator, "acme/2.txt", "--wait"])
        XCTAssertEqual(held.status, 1, "submit --wait ends when the version is held: \(held.stdout) \(held.stderr)")
        XCTAssertTrue(held.stderr.contains("ended held: held by the shrink guard: it has no keys where live version"), held.stderr)
        XCTAssertEqual(try ask(members[7]), 0, "the live list keeps serving")
        let status = try RosterBinary.run(["status", "--coordinator", coordinator])
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertTrue(status.stdout.contains("PROBLEM: version ") && status.stdout.contains("of 'acme' (acme/2.txt) is held by the shrink guard"), status.stdout)
        XCTAssertTrue(status.stdout.contains("roster approve --advertiser acme --version"), status.stdout)
        let pageURL = String(try dev.waitForLine("status page:").split(separator: " ")[0])
        let metrics = try String(contentsOf: URL(string: pageURL + "metrics")!, encoding: .utf8)
        XCTAssertTrue(metrics.contains(#"roster_ingest_files{state="held"} 1"#), metrics)
        XCTAssertTrue(metrics.contains("roster_ingest_versions_held_total 1"), metrics)
        try eventually("the log to say so") { dev.stderr.contains("a new version was held, not published") }

        let history = try RosterBinary.run(["status", "--coordinator", coordinator, "--advertiser", "acme"])
        XCTAssertEqual(history.status, 0, history.stderr)
        let rows = history.stdout.split(separator: "\n").dropFirst().map(String.init)
        XCTAssertEqual(rows.count, 2, history.stdout)
        XCTAssertTrue(rows[0].contains("acme/2.txt") && rows[0].contains("held"), "newest first: \(history.stdout)")
        XCTAssertTrue(rows[1].contains("acme/1.txt") && rows[1].contains("live") && rows[1].contains("200 keys"), history.stdout)
        XCTAssertEqual(try RosterBinary.run(["status", "--coordinator", coordinator, "--advertiser", "nobody"]).status, 69)
        let approved = try RosterBinary.run(["approve", "--coordinator", coordinator, "--advertiser", "acme"])
        XCTAssertEqual(approved.status, 0, approved.stderr)
        XCTAssertTrue(approved.stdout.contains("approved, 0 keys (the live version has 200)"), approved.stdout)
        try eventually("the approved empty list to be served") { try ask(members[7]) == 3 }
        let none = try RosterBinary.run(["approve", "--coordinator", coordinator, "--advertiser", "acme"])
        XCTAssertEqual(none.status, 73, "FAILED_PRECONDITION: \(none.stderr)")
        XCTAssertEqual(none.stderr, "Error: cannot approve a version of acme: FAILED_PRECONDITION: advertiser 'acme' has no version held by the shrink guard\n")

        // An advertiser whose list may really empty: its own limit, 100%.
        try drop(listFile(emails(500..<600)), advertiser: "beta", name: "1.txt", lake: lake)
        try eventually("beta to be served") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "beta", "--email", "user550@example.com"]).status == 0
        }
        let bad = try RosterBinary.run(["max-shrink", "--coordinator", coordinator, "--advertiser", "beta", "150%"])
        XCTAssertEqual(bad.status, 64, bad.stderr)
        let set = try RosterBinary.run(["max-shrink", "--coordinator", coordinator, "--advertiser", "beta", "100%"])
        XCTAssertEqual(set.status, 0, set.stderr)
        XCTAssertTrue(try RosterBinary.run(["advertisers", "--coordinator", coordinator]).stdout.contains("max-shrink 100%"))
        try drop("", advertiser: "beta", name: "2.txt", lake: lake)
        try eventually("beta's empty list to go live without approval") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "beta", "--email", "user550@example.com"]).status == 3
        }
        XCTAssertEqual(dev.stop(SIGINT), 0, dev.stderr)
    }

    /// The coordinator is the source of truth: a list unpublished behind its
    /// back (MatchAdmin.Unpublish called directly) is noticed at the next
    /// reconcile and published again from its segments — the same version,
    /// nothing re-read from the lake — and status and serving agree again.
    func testAListUnpublishedBehindTheCoordinatorsBackIsNoticedAndRestored() throws {
        let (dev, match, coordinator) = try startDev(["--reconcile-interval", "0.5"])
        let members = emails(0..<50)
        try drop(listFile(members), advertiser: "acme", name: "m.txt", lake: root.appendingPathComponent("lake"))
        func ask() throws -> Int32 {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[7]]).status
        }
        try eventually("acme to be served") { try ask() == 0 }
        let unpublished = try RosterBinary.run(["call", "--match", match, "MatchAdmin.Unpublish", #"{"advertiserId": "acme"}"#])
        XCTAssertEqual(unpublished.status, 0, unpublished.stderr)
        try eventually("the coordinator to notice and publish it again") {
            dev.stderr.contains("published a live version again from its segments")
        }
        try eventually("acme to be served again") { try ask() == 0 }
        let listed = try RosterBinary.run(["advertisers", "--coordinator", coordinator, "--json"]).stdout
        XCTAssertTrue(listed.contains(#""liveVersion": "1""#) || listed.contains(#""liveVersion":"1""#), "the same version, not a rebuild: \(listed)")
        XCTAssertTrue(listed.contains(#""versions": 1"#) || listed.contains(#""versions":1"#), "no new version: \(listed)")
        let served = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", members[7]]).stdout
        XCTAssertTrue(served.contains("(version 1)"), "status and serving agree: \(served)")
    }

    /// Nothing needs root: the whole system and the CLI run as nobody.
    /// (Setting TCP_NODELAY at the wrong level once made every connection
    /// of a non-root process fail.)
    func testDevAndTheCLIWorkAsAnUnprivilegedUser() throws {
        let user = try RosterBinary.unprivilegedUser()
        if let user { XCTAssertEqual(chown(root.path, user, user), 0) }
        let dev = try RosterService(["dev", "--data", root.path, "--match-port", "0", "--coordinator-port", "0", "--metrics", "127.0.0.1:0",
                                     "--scan-interval", "0", "--workers", "1"], as: user)
        services.append(dev)
        let match = try dev.waitForLine("match server:")
        let coordinator = try dev.waitForLine("coordinator:")
        let lake = root.appendingPathComponent("lake")
        try drop(listFile(emails(0..<50)), advertiser: "acme", name: "members.txt", lake: lake)
        if let user {
            for path in [lake.appendingPathComponent("acme").path, lake.appendingPathComponent("acme/members.txt").path] {
                XCTAssertEqual(chown(path, user, user), 0)
            }
        }
        let submitted = try RosterBinary.run(["submit", "--coordinator", coordinator, "acme/members.txt", "--wait"], as: user)
        XCTAssertEqual(submitted.status, 0, submitted.stderr + dev.stderr)
        let status = try RosterBinary.run(["status", "--coordinator", coordinator], as: user)
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertTrue(status.stdout.contains("live"), status.stdout)
        let hit = try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", "user7@example.com"], as: user)
        XCTAssertEqual(hit.status, 0, hit.stderr)
        XCTAssertEqual(dev.stop(SIGINT), 0, dev.stderr)
    }

    /// `roster load` spreads calls over several advertisers, and refuses an
    /// unknown one before the run.
    func testLoadSpreadsCallsOverManyAdvertisers() throws {
        let (_, match, coordinator) = try startDev()
        let lake = root.appendingPathComponent("lake")
        for advertiser in ["one", "two", "three"] {
            try drop(listFile(emails(0..<20)), advertiser: advertiser, name: "m.txt", lake: lake)
        }
        try eventually("three lists live") {
            try ["one", "two", "three"].allSatisfy {
                try RosterBinary.run(["match", "--match", match, "--advertiser", $0, "--email", "user1@example.com"]).status == 0
            }
        }
        let noDeadline = try RosterBinary.run(["match", "--match", match, "--advertiser", "one", "--email", "user1@example.com", "--timeout", "0"])
        XCTAssertEqual(noDeadline.status, 0, "--timeout 0 is no deadline: \(noDeadline.stderr)")
        let list = root.appendingPathComponent("advertisers.txt")
        try Data("one\ntwo\n\nthree\n".utf8).write(to: list)
        let run = try RosterBinary.run(["load", "--match", match, "--advertiser", "@\(list.path)", "--rate", "300", "--duration", "1s", "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains(#""errors": {}"#), run.stdout)
        XCTAssertTrue(run.stdout.contains(#""sent": 300"#), run.stdout)
        // Hits and misses counted, every answer checked; a staircase and a total.
        let members = root.appendingPathComponent("members.txt")
        try Data(emails(0..<20).map { MemberHash(email: $0).hex + "\n" }.joined().utf8).write(to: members)
        let checked = try RosterBinary.run(["load", "--match", match, "--advertiser", "one", "--rate", "100:300:step=200/500ms",
                                            "--hashes", members.path, "--hit-ratio", "0.5", "--verify", "--json"])
        XCTAssertEqual(checked.status, 0, checked.stderr)
        let report = try JSONValue(parsing: checked.stdout)
        XCTAssertEqual(report["sent"], .number("200"), "50 calls at 100/s, then 150 at 300/s")
        XCTAssertEqual(report["wrongAnswers"], .number("0"))
        guard case .number(let hits)? = report["hits"], case .number(let misses)? = report["misses"],
              let h = Int(hits), let m = Int(misses) else { return XCTFail(checked.stdout) }
        XCTAssertEqual(h + m, 200)
        XCTAssertGreaterThan(h, 50, "about half the keys are members")
        XCTAssertGreaterThan(m, 50)
        try checkReportsRender(match: match, members: members)
        // A control run whose "members" are not in the list: every hit is a
        // wrong answer, and a wrong answer fails the run.
        let strangers = root.appendingPathComponent("strangers.txt")
        try Data(emails(5_000..<5_020).map { MemberHash(email: $0).hex + "\n" }.joined().utf8).write(to: strangers)
        let wrong = try RosterBinary.run(["load", "--match", match, "--advertiser", "one", "--rate", "100", "--duration", "500ms",
                                          "--hashes", strangers.path, "--hit-ratio", "1", "--verify"])
        XCTAssertEqual(wrong.status, 1, "wrong answers fail the run: \(wrong.stdout)")
        XCTAssertTrue(wrong.stdout.contains("wrong answers: 50"), wrong.stdout)
        XCTAssertEqual(wrong.stderr, "Error: 50 of 50 answers were wrong: the served lists differ from --hashes\n")
        // A warm-up, not counted; metadata sent with every call; a staircase's steps in a table.
        let warmed = try RosterBinary.run(["load", "--match", match, "--advertiser", "one", "--rate", "100:200:step=100/1s", "--warmup", "500ms",
                                           "-H", "x-request-id:load-test"])
        XCTAssertEqual(warmed.status, 0, warmed.stderr)
        XCTAssertTrue(warmed.stdout.hasPrefix("warm-up: 100 calls/s for 0.5 s, not counted"), warmed.stdout)
        XCTAssertTrue(warmed.stdout.contains(", 300 calls in"), "the warm-up's 50 calls are not counted: \(warmed.stdout)")
        let steps = warmed.stdout.split(separator: "\n").drop { !$0.hasPrefix("STEP") }
        XCTAssertEqual(steps.count, 3, "a header and a row per step: \(warmed.stdout)")
        XCTAssertTrue(steps.dropFirst().first?.hasPrefix("1     100 ") == true && steps.dropFirst(2).first?.hasPrefix("2     200 ") == true, warmed.stdout)
        let total = try RosterBinary.run(["load", "--match", match, "--advertiser", "two", "--rate", "500", "--total", "150", "--json"])
        XCTAssertEqual(try JSONValue(parsing: total.stdout)["sent"], .number("150"), total.stdout + total.stderr)

        // Any RPC, from JSON: one request, or a file of them sent in turn.
        let hash = Data(MemberHash(email: "user1@example.com").bytes).base64EncodedString()
        let one = try RosterBinary.run(["load", "--match", match, "--call", "MatchService.Match", "--rate", "200", "--duration", "1s", "--json",
                                        "--data", #"{"advertiserId": "one", "hash": "\#(hash)"}"#])
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(try JSONValue(parsing: one.stdout)["sent"], .number("200"), one.stdout)
        XCTAssertTrue(one.stdout.contains(#""errors": {}"#), one.stdout)
        let requests = root.appendingPathComponent("requests.jsonl")
        try Data((#"{"advertiserId": "one", "hash": "\#(hash)"}"# + "\n\n" + #"{"advertiserId": "two", "hash": "\#(hash)"}"# + "\n").utf8).write(to: requests)
        let file = try RosterBinary.run(["load", "--match", match, "--call", "MatchService.Match", "--data-file", requests.path, "--rate", "200",
                                         "--duration", "500ms", "--json"])
        XCTAssertTrue(file.stdout.contains(#""errors": {}"#), file.stdout + file.stderr)
        let coordinatorCalls = try RosterBinary.run(["load", "--coordinator", coordinator, "--call", "IngestAdmin.ListFiles", "--data", #"{"limit": 1}"#,
                                                     "--rate", "100", "--duration", "500ms", "--json"])
        XCTAssertEqual(try JSONValue(parsing: coordinatorCalls.stdout)["sent"], .number("50"), coordinatorCalls.stdout + coordinatorCalls.stderr)
        XCTAssertTrue(coordinatorCalls.stdout.contains(#""errors": {}"#), coordinatorCalls.stdout)
        XCTAssertNil(try JSONValue(parsing: coordinatorCalls.stdout)["wrongAnswers"], "a call with no keys has no key figures")
        let asText = try RosterBinary.run(["load", "--coordinator", coordinator, "--call", "IngestAdmin.Status", "--data", "{}",
                                           "--rate", "50", "--duration", "200ms", "-H", "x-request-id:7"])
        XCTAssertEqual(asText.status, 0, asText.stderr)
        XCTAssertFalse(asText.stdout.contains("keys/s") || asText.stdout.contains("wrong answers"), asText.stdout)
        for (args, expected) in [
            (["--call", "Nope.Nope", "--data", "{}"], "Error: no RPC named Nope.Nope (`roster call --list` shows them all)"),
            (["--call", "Coordinator.ListFile", "--data", "{}"], "Error: no RPC named Coordinator.ListFile; did you mean IngestAdmin.ListFiles?"),
            (["--call", "MatchService.Match", "--data", #"{"hash": 5}"#], "Error: bad request for MatchService.Match: "),
            (["--call", "MatchService.Match", "--data", #"{"advertiserId": "nobody", "hash": "\#(hash)"}"#],
             "Error: MatchService.Match fails at \(match) before the run: NOT_FOUND"),
            (["--call", "MatchService.Match"], "Error: --call needs its request: --data '{...}' or --data-file FILE"),
        ] {
            let refused = try RosterBinary.run(["load", "--match", match, "--rate", "100", "--duration", "1s"] + args)
            XCTAssertNotEqual(refused.status, 0)
            XCTAssertTrue(refused.stderr.hasPrefix(expected), "\(args): \(refused.stderr)")
            XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, "one line: \(refused.stderr)")
            XCTAssertFalse(refused.stdout.contains("calls/s"), "the run started: \(refused.stdout)")
        }
        let unknown = try RosterBinary.run(["load", "--match", match, "--advertiser", "one,nobody", "--rate", "300", "--duration", "1s"])
        XCTAssertEqual(unknown.status, 69, "NOT_FOUND: \(unknown.stderr)")
        XCTAssertTrue(unknown.stderr.hasPrefix("Error: advertiser 'nobody' has no list on the match server at"), unknown.stderr)
        XCTAssertFalse(unknown.stdout.contains("calls/s"), "the run started: \(unknown.stdout)")
    }

    /// `--csv` has a row a second; `--html` is one page whose plots headless
    /// Chromium draws: the screenshot holds the colours of the percentile
    /// curve, the calls/s line and the p99 line (counted by
    /// Tests/Fixtures/screenshots/png_colors.py).
    private func checkReportsRender(match: String, members: URL) throws {
        let (html, csv) = (root.appendingPathComponent("report.html"), root.appendingPathComponent("seconds.csv"))
        let run = try RosterBinary.run(["load", "--match", match, "--advertiser", "three", "--rate", "100:300:step=100/1s",
                                        "--hashes", members.path, "--html", html.path, "--csv", csv.path])
        XCTAssertEqual(run.status, 0, run.stderr)
        let rows = try String(contentsOf: csv, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(rows.first, "second,asked_calls_per_second,calls_per_second,errors,p50_ms,p99_ms,in_flight,sender_lag_ms")
        // A row for each second of the schedule (and one after it if late replies ended the run there).
        let all = rows.dropFirst().map { $0.split(separator: ",").map(String.init) }
        let seconds = all.filter { $0[1] != "0" }
        XCTAssertEqual(seconds.map { $0[0] + "," + $0[1] }, ["1,100", "2,200", "3,300"], "each second and the rate it asked")
        XCTAssertLessThanOrEqual(all.count, 4, "\(all)")
        for (row, asked) in zip(seconds, [100, 200, 300]) {
            // A reply at a second's edge may land in the next one.
            XCTAssertEqual(Double(row[2]) ?? 0, Double(asked), accuracy: 10, "calls in second \(row[0])")
        }
        let page = try String(contentsOf: html, encoding: .utf8)
        XCTAssertTrue(page.contains("<svg id=\"percentiles\"") && page.contains("<svg id=\"timeline\""), "both plots")
        XCTAssertFalse(page.contains("http://") && !page.contains("xmlns=\"http://www.w3.org/2000/svg\""), "nothing fetched from the network")
        XCTAssertTrue(page.contains("held: every call sent on time and answered"), page)

        guard Chromium.available() else { return }
        let shot = try Chromium.screenshot(html.absoluteString, width: 900, height: 1400, in: root)
        let counts = try Chromium.colorCounts(shot.png, ["2ca02c", "1f77b4", "d62728"])
        for (count, what) in zip(counts, ["the percentile curve (green)", "the calls/s line (blue)", "the p99 line (red)"]) {
            XCTAssertGreaterThan(count, 200, "\(what) is not in the screenshot: \(counts)")
        }
    }

    /// The coordinator's status page in headless Chromium, with a file held
    /// mid-ingest (its only worker frozen with SIGSTOP part-way): the
    /// screenshot shows the progress bar, and the page logs no error.
    func testTheStatusPageShowsAFileIngesting() throws {
        let dev = try RosterService(["dev", "--data", root.path, "--match-port", "0", "--coordinator-port", "0", "--metrics", "127.0.0.1:0",
                                     "--scan-interval", "0.2", "--block-size", "1024", "--workers", "0"])
        services.append(dev)
        let coordinator = try dev.waitForLine("coordinator:")
        let page = String(try dev.waitForLine("status page:").split(separator: " ")[0])
        XCTAssertTrue(page.hasPrefix("http://127.0.0.1:") && page.hasSuffix("/"), page)
        try drop(listFile(emails(0..<60_000)), advertiser: "big", name: "list.txt", lake: root.appendingPathComponent("lake"))
        func progress() throws -> (done: Int, total: Int) {
            let json = try String(contentsOf: URL(string: page + "status.json")!, encoding: .utf8)
            func number(_ field: String) -> Int {
                guard let range = json.range(of: "\"\(field)\": ") else { return 0 }
                return Int(json[range.upperBound...].prefix { $0.isNumber }) ?? 0
            }
            return (number("blocksDone"), number("blocksTotal"))
        }
        try eventually("the file to be queued") { try progress().total > 0 }
        let worker = try RosterService(["worker", "--data", root.path, "--coordinator", coordinator, "--log-level", "error"])
        services.append(worker)
        try eventually(timeout: 60, "a third of the blocks to be parsed") { let p = try progress(); return p.done * 3 >= p.total }
        worker.signal(SIGSTOP)
        defer { worker.signal(SIGCONT) }
        let held = try progress()
        XCTAssertLessThan(held.done, held.total, "the file is still ingesting")

        let html = try String(contentsOf: URL(string: page)!, encoding: .utf8)
        XCTAssertTrue(html.contains("<title>Roster — status</title>"), html)
        XCTAssertFalse(html.contains("https://") || html.contains("src=\"http"), "nothing from the network")
        guard Chromium.available() else { return }
        let shot = try Chromium.screenshot(page, width: 1200, height: 900, in: root)
        let consoleLines = shot.log.split(separator: "\n").filter { $0.contains("CONSOLE") }
        XCTAssertTrue(consoleLines.contains { $0.contains("roster-status: rendered") && $0.contains("1 in flight") }, "the page rendered: \(shot.log)")
        for line in consoleLines {
            XCTAssertFalse(line.lowercased().contains("uncaught") || line.lowercased().contains("error"), "a console error: \(line)")
        }
        let counts = try Chromium.colorCounts(shot.png, ["2ca02c", "e6ebf0"])
        XCTAssertGreaterThan(counts.first ?? 0, 500, "the progress bar's done part (green) is in the screenshot: \(counts)")
        XCTAssertGreaterThan(counts.last ?? 0, 300, "and the part still to do: \(counts)")
    }

    /// A worker whose coordinator is not there says so at the default log
    /// level, once, and keeps trying.
    func testAWorkerThatCannotReachItsCoordinatorSaysSo() throws {
        let worker = try RosterService(["worker", "--data", root.path, "--coordinator", "127.0.0.1:1"])
        services.append(worker)
        try eventually(timeout: 20, "the worker to say it cannot lease") { worker.stderr.contains("cannot lease from the coordinator; retrying") }
        XCTAssertTrue(worker.stderr.contains("connection refused"), worker.stderr)
        usleep(1_500_000)
        XCTAssertEqual(worker.stderr.components(separatedBy: "cannot lease from the coordinator").count - 1, 1, "once per outage: \(worker.stderr)")
        XCTAssertTrue(worker.process.isRunning, "it keeps trying")
    }

    /// SIGTERM stops a match server whether its scrub runs or is off (a
    /// service that returned at once used to leave the rest deaf to signals).
    func testMatchServerStopsOnSIGTERMWithTheScrubOnOrOff() throws {
        for rate in ["0", "32"] {
            let server = try RosterService(["match-server", "--no-auth", "--plaintext", "--data", root.path, "--listen", "127.0.0.1:0", "--scrub-rate", rate])
            services.append(server)
            _ = try server.waitForLine("match server listening on")
            // 0 once its signal handlers are installed; SIGTERM's own status if
            // the signal came first. Either way it stopped: not SIGKILL after the timeout.
            let status = server.stop(SIGTERM, timeout: 10)
            XCTAssertTrue([0, SIGTERM].contains(status), "--scrub-rate \(rate): exit \(status): \(server.stderr.suffix(500))")
        }
    }

    func testCallWorksForEveryRPC() throws {
        let (_, match, coordinator) = try startDev()
        try drop(listFile(emails(0..<50)), advertiser: "acme", name: "m.txt", lake: root.appendingPathComponent("lake"))
        let hash = MemberHash(email: "user3@example.com").bytes.base64EncodedString()
        let requests: [String: String] = [
            "MatchService.Match": #"{"advertiserId": "acme", "hash": "\#(hash)"}"#,
            "MatchService.MatchMany": #"{"advertiserId": "acme", "hashes": "\#(hash)"}"#,
            "MatchService.MatchAdvertisers": #"{"hash": "\#(hash)", "advertiserIds": ["acme", "nobody"]}"#,
            "MatchAdmin.Publish": #"{"advertiserId": "cli-empty", "version": "1"}"#,
            "MatchAdmin.Unpublish": #"{"advertiserId": "cli-empty"}"#,
            "MatchAdmin.ListServed": "{}",
            "MatchAdmin.PublishMany": #"{"publications": [{"advertiserId": "cli-many", "version": "1"}]}"#,
            "MatchAdmin.Export": #"{"advertiserId": "acme", "limit": 2}"#,
            "IngestAdmin.ListAdvertisers": #"{"limit": 10}"#,
            "IngestAdmin.Rollback": #"{"advertiserId": "nobody"}"#,
            "IngestAdmin.DeleteAdvertiser": #"{"advertiserId": "nobody"}"#,
            "IngestAdmin.SubmitFile": #"{"path": "acme/m.txt"}"#,
            "IngestAdmin.Status": "{}",
            "IngestAdmin.ListFiles": #"{"advertiserId": "acme", "limit": 5}"#,
            "IngestAdmin.Scan": "{}",
            "IngestAdmin.SetWeight": #"{"advertiserId": "acme", "weight": 2.5}"#,
            "IngestAdmin.Approve": #"{"advertiserId": "acme"}"#,
            "IngestAdmin.SetMaxShrink": #"{"advertiserId": "acme", "maxShrink": 0.9}"#,
            "TaskQueue.LeaseTasks": #"{"workerId": "cli-test", "max": 0}"#,
            "TaskQueue.Heartbeat": #"{"workerId": "cli-test"}"#,
            "TaskQueue.CompleteTask": #"{"workerId": "cli-test", "taskId": "999999", "leaseToken": "x"}"#,
            "TaskQueue.FailTask": #"{"workerId": "cli-test", "taskId": "999999", "leaseToken": "x"}"#,
            "Tier.RegisterNode": #"{"nodeId": "m1", "address": "127.0.0.1:1", "incarnation": "a"}"#,
            "Tier.Placement": #"{"advertiserIds": ["acme"]}"#,
        ]
        XCTAssertEqual(Set(requests.keys), Set(RosterSchema.methods.map(\.shortName)), "a request for every RPC of the schema")
        try eventually("acme to be live") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "acme", "--email", "user3@example.com"]).status == 0
        }
        for (method, json) in requests.sorted(by: { $0.key < $1.key }) {
            let result = try RosterBinary.run(["call", "--match", match, "--coordinator", coordinator, method, json])
            if method == "IngestAdmin.DeleteAdvertiser" {
                XCTAssertEqual(result.status, 69, "NOT_FOUND: \(result.stderr)")
                continue
            }
            if method == "IngestAdmin.Rollback" {
                // An advertiser the catalog does not know: NOT_FOUND, as for a delete.
                XCTAssertEqual(result.status, 69, result.stderr)
                XCTAssertTrue(result.stderr.contains("NOT_FOUND") && result.stderr.contains("no advertiser 'nobody'"), result.stderr)
                continue
            }
            if method == "IngestAdmin.Approve" {
                // Nothing of acme's is held: FAILED_PRECONDITION, in words.
                XCTAssertEqual(result.status, 73, result.stderr)
                XCTAssertTrue(result.stderr.contains("has no version held by the shrink guard"), result.stderr)
                continue
            }
            if method == "Tier.RegisterNode" {
                // `roster dev` publishes to its one match server, not to a tier.
                XCTAssertNotEqual(result.status, 0)
                XCTAssertTrue(result.stderr.contains("FAILED_PRECONDITION") && result.stderr.contains("not to a tier"), result.stderr)
                continue
            }
            XCTAssertEqual(result.status, 0, "\(method): \(result.stderr)")
            let response = try JSONValue(parsing: result.stdout)
            guard case .object = response else { return XCTFail("\(method) printed \(result.stdout)") }
            switch method {
            case "MatchService.Match": XCTAssertEqual(response["matched"], .bool(true))
            case "MatchService.MatchMany": XCTAssertEqual(response["matchedCount"], .number("1"))
            case "MatchService.MatchAdvertisers": XCTAssertEqual(response["unknownCount"], .number("1"), result.stdout)
            case "IngestAdmin.SubmitFile": XCTAssertEqual(response["queued"], .bool(false), "defaults are shown")
            case "TaskQueue.CompleteTask": XCTAssertEqual(response["accepted"], .bool(false))
            case "TaskQueue.LeaseTasks": XCTAssertEqual(response["tasks"], .array([]))
            case "MatchAdmin.Export": XCTAssertNotEqual(response["nextAfter"], .string(""), "50 keys, pages of 2: more follow")
            default: break
            }
        }
        let stdinCall = try RosterBinary.run(["call", "--coordinator", coordinator, "IngestAdmin.ListFiles", "-"], stdin: #"{"limit": 1}"#)
        XCTAssertEqual(stdinCall.status, 0, stdinCall.stderr)

        let list = try RosterBinary.run(["call", "--list"])
        let listed = list.stdout.split(separator: "\n").filter { $0.hasPrefix("  ") }
        XCTAssertEqual(listed.count, RosterSchema.methods.count, list.stdout)
        XCTAssertTrue(listed.allSatisfy { $0.hasSuffix(".") || $0.hasSuffix(")") }, "each description whole, to its sentence's end: \(list.stdout)")
        XCTAssertTrue(list.stdout.contains("Internal: block workers only"), "workers' RPCs apart from the operators': \(list.stdout)")
        let taskQueue = try XCTUnwrap(list.stdout.range(of: "  TaskQueue.LeaseTasks"))
        XCTAssertTrue(list.stdout[..<taskQueue.lowerBound].contains("Internal:"), list.stdout)
        let describe = try RosterBinary.run(["call", "--describe", "IngestAdmin.SubmitFile"])
        XCTAssertTrue(describe.stdout.contains("message SubmitFileRequest {"), describe.stdout)
        XCTAssertTrue(describe.stdout.contains("string path = 1;"), describe.stdout)
        XCTAssertTrue(describe.stdout.contains(#""path": """#), "the default request is shown: \(describe.stdout)")
        // Nested messages expanded, once each; a message by name.
        let nested = try RosterBinary.run(["call", "--describe", "MatchAdmin.PublishMany"])
        XCTAssertEqual(nested.stdout.components(separatedBy: "message SegmentRef {").count - 1, 1, nested.stdout)
        XCTAssertTrue(nested.stdout.contains("message PublishResult {"), nested.stdout)
        let message = try RosterBinary.run(["call", "--describe", "FileStatus"])
        XCTAssertTrue(message.stdout.contains("message FileStatus {") && message.stdout.contains("message InvalidLine {"), message.stdout)
        let enumDescribed = try RosterBinary.run(["call", "--describe", "FileState"])
        XCTAssertTrue(enumDescribed.stdout.contains("enum FileState {") && enumDescribed.stdout.contains("FILE_STATE_LIVE = 5;"), enumDescribed.stdout)
        let withEnum = try RosterBinary.run(["call", "--describe", "IngestAdmin.Status"])
        XCTAssertEqual(withEnum.stdout.components(separatedBy: "enum FileState {").count - 1, 1, "the enum a field uses, once: \(withEnum.stdout)")

        // @file, and hex where bytes are base64.
        let requestFile = root.appendingPathComponent("request.json")
        try Data(#"{"limit": 1}"#.utf8).write(to: requestFile)
        let fromFile = try RosterBinary.run(["call", "--coordinator", coordinator, "IngestAdmin.ListFiles", "@" + requestFile.path])
        XCTAssertEqual(fromFile.status, 0, fromFile.stderr)
        XCTAssertEqual(fromFile.stdout.components(separatedBy: "\"version\":").count - 1, 1, "one file, as the file asked: \(fromFile.stdout)")
        let hex = MemberHash(email: "user3@example.com").hex
        let wrong = try RosterBinary.run(["call", "--match", match, "MatchService.Match", #"{"advertiserId": "acme", "hash": "\#(hex)"}"#])
        XCTAssertEqual(wrong.status, 67, "INVALID_ARGUMENT: \(wrong.stderr)")
        XCTAssertTrue(wrong.stderr.contains("looks like hex, which in base64 is \"\(MemberHash(email: "user3@example.com").bytes.base64EncodedString())\""),
                      wrong.stderr)
    }

    /// Every command refuses bad input with an `Error:` line and a non-zero
    /// exit, never a crash or a stack trace.
    func testBadInputGivesAClearErrorAndNonZeroExit() throws {
        let unreachable = "127.0.0.1:1"
        let badFile = root.appendingPathComponent("bad-hashes.txt")
        try Data("0cc175b9c0f1b6a831c399e269772661\r\n\n  92eb5ffee6ae2fec3ad71c777531578f \nnot-a-hash\n".utf8).write(to: badFile)
        let emailFile = root.appendingPathComponent("emails.txt")
        try Data("email_md5\nann@example.com\n".utf8).write(to: emailFile)
        let cases: [([String], String)] = [
            (["match", "--advertiser", "a", "--file", badFile.path], "\(badFile.path):4: not a 32-hex-digit hash"),
            (["match", "--advertiser", "a", "--hash", "xyz"], "--hash must be 32 hex digits"),
            (["match", "--advertiser", "a", "--file", emailFile.path], "\(emailFile.path):2: an email, not its hash (use --email for one address)"),
            (["match", "--advertiser", "a"], "give exactly one of --hash, --email or --file"),
            (["match", "--hash", String(repeating: "0", count: 32)], "give exactly one of --advertiser or --advertisers"),
            (["match", "--advertisers", "a,b", "--file", "x.txt"], "--advertisers asks about one --hash or --email, not a --file"),
            (["match", "--match", unreachable, "--advertiser", "a", "--email", "a@b.c"], "match failed: UNAVAILABLE"),
            (["match", "--advertiser", "a", "--file", "/nonexistent/hashes.txt"], "cannot read /nonexistent/hashes.txt"),
            (["call", "Nope.Nothing"], "no RPC named Nope.Nothing"),
            (["call", "IngestAdmin.Status", "{bad"], "bad request for IngestAdmin.Status: invalid JSON at 1:2"),
            (["call", "IngestAdmin.ListFiles", #"{"limit": "lots"}"#], "field 'limit': lots is not a valid UInt32"),
            (["call", "--coordinator", unreachable, "IngestAdmin.Status"], "IngestAdmin.Status failed: UNAVAILABLE"),
            (["status", "--coordinator", unreachable],
             "cannot get the status: UNAVAILABLE: cannot connect to 127.0.0.1:1: connection refused (is the server running, on this port?)"),
            (["submit", "--coordinator", unreachable, "a/b.txt"], "cannot submit a/b.txt: UNAVAILABLE"),
            (["submit"], "Missing expected argument '<path>'"),
            (["load", "--advertiser", "a", "--rate", "0"], "--rate: '0' is not a rate: give calls per second, more than 0 and at most 10,000,000"),
            (["load", "--advertiser", "a", "--rate", "1:9:step=1"], "the third part is step=<calls/s>/<duration>, as in 1000:20000:step=1000/5s"),
            (["load", "--advertiser", "a", "--rate", "1:9:step=1/1s", "--total", "5"], "--total goes with one --rate, not a staircase"),
            (["load", "--advertiser", "a", "--duration", "soon"], "The value 'soon' is invalid for '--duration"),
            (["load", "--advertiser", "a", "--hit-ratio", "0.3"], "--hit-ratio needs --hashes: the members to draw hits from"),
            (["match", "--advertiser", "a", "--hash", String(repeating: "0", count: 31) + "z"], "--hash must be hex digits: 'z' at position 32 is not one"),
            (["match", "--advertiser", "a", "--hash", "abc"], "--hash must be 32 hex digits (an MD5) or 64 (a SHA-256), got 3 characters"),
            (["match", "--advertiser", "a", "--email", "  "], "--email is empty"),
            (["match", "--advertiser", "a", "--email", "ann smith@example.com"], "--email 'ann smith@example.com' has a space inside it"),
            (["match", "--advertiser", "a", "--email", "a@b.c", "--timeout=-1"], "The value '-1' is invalid for '--timeout"),
            (["coordinator", "--data", root.path, "--no-auth", "--plaintext", "--lease", "soon"], "The value 'soon' is invalid for '--lease"),
            (["load", "--match", unreachable, "--advertiser", "a", "--html", "/nonexistent/r.html"], "cannot write /nonexistent/r.html: no folder /nonexistent"),
            (["load", "--match", unreachable, "--advertiser", "a"], "cannot reach the match server at 127.0.0.1:1"),
            (["match-server", "--data", root.path, "--listen", "127.0.0.1:0", "--plaintext"], "set ROSTER_CLIENT_TOKENS and ROSTER_ADMIN_TOKENS"),
            (["match-server", "--data", root.path, "--no-auth"], "the match server would serve in plaintext: give --tls-cert and --tls-key, or pass --plaintext"),
            (["coordinator", "--data", root.path, "--no-auth"], "the coordinator would serve in plaintext: give --tls-cert and --tls-key, or pass --plaintext"),
            (["match-server", "--data", root.path, "--no-auth", "--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key go together"),
            (["match-server", "--data", root.path, "--no-auth", "--plaintext", "--tls-ca", "/ca.pem"], "--tls-ca needs --tls-cert and --tls-key"),
            (["match", "--advertiser", "a", "--hash", String(repeating: "0", count: 32), "--cert", "/c.pem"],
             "TLS: a client certificate and its key go together"),
            (["match", "--advertiser", "a", "--hash", String(repeating: "0", count: 32), "--ca", "/nonexistent-ca.pem"],
             "TLS: cannot read /nonexistent-ca.pem: No such file or directory"),
            (["coordinator", "--data", root.path, "--no-auth", "--plaintext", "--block-size", "10"], "--block-size must be at least 1024 bytes"),
            (["coordinator", "--data", root.path, "--listen", "127.0.0.1:0", "--plaintext"], "set ROSTER_OPERATOR_TOKENS and ROSTER_WORKER_TOKENS"),
            (["dev", "--workers", "1000"], "--workers must be between 0 and 64"),
            // Checked before anything starts, whatever the lake and store are.
            (["dev", "--data", root.path, "--s3-addressing", "weird"], "--s3-addressing must be path or virtual-host, not 'weird'"),
            (["dev", "--data", root.path, "--s3-access-key", "k"], "--s3-access-key and --s3-secret-key go together"),
            (["dev", "--data", root.path, "--log-level", "loud"], "The value 'loud' is invalid for '--log-level <log-level>'"),
            (["frobnicate"], "Error: unknown command 'frobnicate' (see 'roster --help')"),
            (["match", "--match", "nohost", "--advertiser", "a", "--email", "x"], "The value 'nohost' is invalid for '--match"),
        ]
        let loud = try RosterBinary.run(["dev", "--data", root.path, "--log-level", "loud"])
        XCTAssertTrue(loud.stderr.contains("trace, debug, info, notice, warning, error, critical"), "the levels are named: \(loud.stderr)")
        let badLevel = try RosterBinary.run(["dev", "--data", root.path], environment: ["ROSTER_LOG_LEVEL": "loud"])
        XCTAssertEqual(badLevel.status, 64, badLevel.stderr)
        XCTAssertTrue(badLevel.stderr.hasPrefix("Error: ROSTER_LOG_LEVEL='loud' is not a log level: use one of trace, debug"), badLevel.stderr)
        let badEnvironment = try RosterBinary.run(["match", "--advertiser", "a", "--email", "a@b.c"], environment: ["ROSTER_MATCH": "nohost"])
        XCTAssertTrue(badEnvironment.stderr.hasPrefix("Error: ROSTER_MATCH='nohost' is not host:port; fix it or pass --match"), badEnvironment.stderr)
        // The one token for every audience is gone: said so at start, never quietly ignored.
        let retired = try RosterBinary.run(["coordinator", "--data", root.path, "--listen", "127.0.0.1:0", "--plaintext"],
                                           environment: ["ROSTER_COORDINATOR_TOKENS": "t1"])
        XCTAssertEqual(retired.status, 1, retired.stderr)
        XCTAssertTrue(retired.stderr.hasPrefix("Error: ROSTER_COORDINATOR_TOKENS is retired: the coordinator takes one token set per audience"),
                      retired.stderr)
        for (args, expected) in cases {
            let result = try RosterBinary.run(args, timeout: 20)
            XCTAssertNotEqual(result.status, 0, "roster \(args.joined(separator: " ")) should fail")
            let lines = result.stderr.split(separator: "\n")
            let firstLine = lines.first.map(String.init) ?? ""
            XCTAssertTrue(firstLine.hasPrefix("Error: "), "roster \(args.joined(separator: " ")): \(result.stderr)")
            // One line, never ArgumentParser's usage block after it.
            XCTAssertEqual(lines.count, 1, "roster \(args.joined(separator: " ")): one line: \(result.stderr)")
            // The documented statuses: a bad command line 64, a failed call 64 + its code, else 1.
            if result.stderr.contains("UNAVAILABLE") || result.stderr.contains("cannot reach") {
                XCTAssertEqual(result.status, 78, "roster \(args.joined(separator: " ")): UNAVAILABLE is 64 + 14")
            } else if result.stderr.contains("--help')") {
                XCTAssertEqual(result.status, 64, "roster \(args.joined(separator: " ")): a bad command line")
            } else {
                XCTAssertTrue([1, 64].contains(result.status), "roster \(args.joined(separator: " ")): status \(result.status)")
            }
            XCTAssertTrue(result.stderr.contains(expected), "roster \(args.joined(separator: " ")): expected '\(expected)' in \(result.stderr)")
            for crash in ["Fatal error", "Stack dump", "Current stack trace", "Segmentation"] {
                XCTAssertFalse(result.stderr.contains(crash), "roster \(args.joined(separator: " ")) crashed: \(result.stderr)")
            }
        }
    }

    /// The exit statuses `roster --help` documents, and a misspelled flag
    /// named as such (ArgumentParser reports a missing flag first).
    func testExitStatusesAndMisspelledFlags() throws {
        let misspelled = try RosterBinary.run(["match", "--advertser", "acme", "--hash", String(repeating: "0", count: 32)])
        XCTAssertEqual(misspelled.status, 64)
        XCTAssertEqual(misspelled.stderr, "Error: unknown option '--advertser' (did you mean '--advertiser'?) (see 'roster match --help')\n")
        let extra = try RosterBinary.run(["match", "--advertiser", "acme", "--hsh", String(repeating: "0", count: 32)])
        XCTAssertEqual(extra.status, 64)
        XCTAssertTrue(extra.stderr.hasPrefix("Error: unknown option '--hsh' (did you mean '--hash'?)"), extra.stderr)
        let missing = try RosterBinary.run(["match", "--hash", String(repeating: "0", count: 32)])
        XCTAssertEqual(missing.status, 64)
        XCTAssertEqual(missing.stderr, "Error: give exactly one of --advertiser or --advertisers (see 'roster match --help')\n")
        let typo = try RosterBinary.run(["stauts"])
        XCTAssertEqual(typo.status, 64)
        XCTAssertEqual(typo.stderr, "Error: unknown command 'stauts' (did you mean 'status'?) (see 'roster --help')\n")
        let rpcTypo = try RosterBinary.run(["call", "IngestAdmin.ListFile"])
        XCTAssertEqual(rpcTypo.status, 1)
        XCTAssertTrue(rpcTypo.stderr.hasPrefix("Error: no RPC named IngestAdmin.ListFile; did you mean IngestAdmin.ListFiles?"), rpcTypo.stderr)
        let refused = try RosterBinary.run(["status", "--coordinator", "127.0.0.1:1"])
        XCTAssertEqual(refused.status, 78, "UNAVAILABLE: 64 + 14: \(refused.stderr)")
        let version = try RosterBinary.run(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertTrue(version.stdout.first?.isNumber == true, version.stdout)
        // The commit it was built from, and when (Plugins/BuildInfo).
        let head = Process()
        head.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        head.arguments = ["-C", root.path, "rev-parse", "--short=12", "HEAD"]
        let pipe = Pipe()
        head.standardOutput = pipe
        head.standardError = FileHandle.nullDevice
        if (try? head.run()) != nil {
            head.waitUntilExit()
            let commit = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if head.terminationStatus == 0 { XCTAssertTrue(version.stdout.contains("(commit \(commit)"), "\(commit) in \(version.stdout)") }
        }
        XCTAssertNotNil(version.stdout.range(of: #"built \d{4}-\d{2}-\d{2}\)"#, options: .regularExpression), version.stdout)
        let help = try RosterBinary.run(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("78 UNAVAILABLE"), "the statuses are documented: \(help.stdout)")
        XCTAssertTrue(help.stdout.contains("mv members.txt"), help.stdout)
        let load = try RosterBinary.run(["load", "--help"])
        XCTAssertTrue(load.stdout.contains("(default: 10s)"), "a duration's default reads as one: \(load.stdout)")
        let match = try RosterBinary.run(["match", "--help"])
        XCTAssertTrue(match.stdout.contains("ROSTER_MATCH"), "help names the environment variables: \(match.stdout)")
        // A command lists only the options it uses.
        let status = try RosterBinary.run(["status", "--help"]).stdout
        for unused in ["--match ", "--token ", "--admin-token "] { XCTAssertFalse(status.contains(unused), "status --help lists \(unused): \(status)") }
        XCTAssertTrue(status.contains("--operator-token"), status)
        let export = try RosterBinary.run(["export", "--help"]).stdout
        for unused in ["--coordinator ", "--operator-token ", "--token "] { XCTAssertFalse(export.contains(unused), "export --help lists \(unused): \(export)") }
    }

    /// A metrics address in use stops a service at start, in one line, for
    /// every service; a free one serves /metrics, /healthz and /readyz.
    func testMetricsAddressInUseAndHealthEndpoints() throws {
        let (fd, port) = try busyPort()
        defer { close(fd) }
        let data = root.path
        for args in [["match-server", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0"],
                     ["coordinator", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0"],
                     ["worker", "--data", data, "--coordinator", "127.0.0.1:1"],
                     ["dev", "--data", data, "--match-port", "0", "--coordinator-port", "0"]] {
            let result = try RosterBinary.run(args + ["--metrics", "127.0.0.1:\(port)"], timeout: 20)
            XCTAssertEqual(result.status, 1, "\(args[0]): \(result.stderr)")
            let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
            XCTAssertEqual(errors, ["Error: cannot serve metrics on 127.0.0.1:\(port): the port is in use (choose another with --metrics)"],
                           "\(args[0]): \(result.stderr)")
        }
        // The same for the RPC port, said in words rather than as a bind errno.
        let busyRPC = try RosterBinary.run(["coordinator", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:\(port)"], timeout: 20)
        XCTAssertEqual(busyRPC.status, 1, busyRPC.stderr)
        XCTAssertTrue(busyRPC.stderr.contains("cannot start the coordinator on 127.0.0.1:\(port): the port is in use"), busyRPC.stderr)
        let metricsPort = try freePort()
        let server = try RosterService(["match-server", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0",
                                        "--metrics", "127.0.0.1:\(metricsPort)"])
        services.append(server)
        let line = try server.waitForLine("match server listening on")
        XCTAssertTrue(line.contains("metrics http://127.0.0.1:\(metricsPort)/metrics"), line)
        for (path, expected) in [("/healthz", "ok"), ("/readyz", "ready")] {
            let body = try String(contentsOf: URL(string: "http://127.0.0.1:\(metricsPort)\(path)")!, encoding: .utf8)
            XCTAssertEqual(body, expected + "\n", path)
        }
        let metrics = try String(contentsOf: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!, encoding: .utf8)
        XCTAssertTrue(metrics.contains("# HELP process_resident_memory_bytes"), metrics)
    }

    /// Every command's help has examples, and its discussion is written to
    /// fit an 80-column terminal: ArgumentParser breaks a longer line
    /// wherever the width runs out ("(trimmed,\nlowercased, MD5)"), so the
    /// text before USAGE must read the same at 80 columns as at 500.
    func testEveryCommandHasHelpWithExamplesThatFitsEightyColumns() throws {
        func discussion(_ command: [String], columns: Int) throws -> String {
            let text = try RosterBinary.run(command + ["--help"], environment: ["COLUMNS": "\(columns)"]).stdout
            // What comes before USAGE, less the OVERVIEW paragraph (ArgumentParser wraps that one itself).
            let head = text.components(separatedBy: "\nUSAGE:").first ?? text
            return head.components(separatedBy: "\n\n").filter { !$0.hasPrefix("OVERVIEW:") }.joined(separator: "\n\n")
        }
        for command in ["dev", "coordinator", "worker", "match-server", "submit", "status", "advertisers", "rollback", "approve", "max-shrink",
                        "delete", "match", "export", "call", "load"] {
            let result = try RosterBinary.run([command, "--help"])
            XCTAssertEqual(result.status, 0, command)
            XCTAssertTrue(result.stdout.contains("Example"), "\(command) --help has examples: \(result.stdout)")
        }
        for command in [[], ["dev"], ["coordinator"], ["worker"], ["match-server"], ["submit"], ["status"], ["advertisers"], ["rollback"],
                        ["approve"], ["max-shrink"], ["delete"], ["match"], ["export"], ["call"], ["load"]] {
            XCTAssertEqual(try discussion(command, columns: 80), try discussion(command, columns: 500),
                           "roster \(command.joined()) --help: a line of its discussion is wider than 80 columns")
        }
    }

    /// The services as separate processes; the coordinator is killed with
    /// SIGKILL mid-ingest, started again on the same catalog and port, and
    /// the file still goes live whole.
    func testCoordinatorKilledMidIngestCarriesOnAfterRestart() throws {
        let data = root.path
        let matchServer = try RosterService(["match-server", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0"])
        services.append(matchServer)
        let matchLine = try matchServer.waitForLine("match server listening on")
        let match = String(matchLine.split(separator: ";")[0])
        let coordinatorArgs = ["coordinator", "--plaintext", "--data", data, "--match", match, "--block-size", "1024", "--lease", "1s",
                               "--scan-interval", "0"]
        // Callers of this coordinator need a token of their audience: the
        // worker its worker token, every command below the operator's.
        let tokens = ["ROSTER_OPERATOR_TOKENS": "cli-secret", "ROSTER_WORKER_TOKENS": "worker-secret"]
        var coordinatorProcess = try RosterService(coordinatorArgs + ["--listen", "127.0.0.1:0"], environment: tokens)
        services.append(coordinatorProcess)
        let coordinator = String(try coordinatorProcess.waitForLine("coordinator listening on").split(separator: ";")[0])
        let worker = try RosterService(["worker", "--data", data, "--coordinator", coordinator, "--log-level", "error",
                                        "--token", "worker-secret"])
        services.append(worker)
        let refused = try RosterBinary.run(["status", "--coordinator", coordinator])
        XCTAssertEqual(refused.status, 80, "UNAUTHENTICATED: 64 + 16")
        XCTAssertTrue(refused.stderr.contains("UNAUTHENTICATED"), refused.stderr)
        // The token as metadata, by hand (-H, as grpcurl's).
        let byHand = try RosterBinary.run(["call", "--coordinator", coordinator, "-H", "Authorization: Bearer cli-secret", "IngestAdmin.Status"])
        XCTAssertEqual(byHand.status, 0, byHand.stderr)
        XCTAssertEqual(try RosterBinary.run(["call", "--coordinator", coordinator, "-H", "authorization:Bearer wrong", "IngestAdmin.Status"]).status, 80)
        // A worker's token is known but may not make an operator's calls: PERMISSION_DENIED (64 + 7), said in words.
        let asWorker = try RosterBinary.run(["delete", "--coordinator", coordinator, "--operator-token", "worker-secret", "--advertiser", "big", "--yes"])
        XCTAssertEqual(asWorker.status, 71, asWorker.stderr)
        XCTAssertTrue(asWorker.stderr.contains("a worker token cannot call roster.v1.IngestAdmin/DeleteAdvertiser"), asWorker.stderr)

        let members = emails(0..<6000) // ~200 KB: about 200 blocks of 1 KiB
        try drop(listFile(members), advertiser: "big", name: "all.txt", lake: root.appendingPathComponent("lake"))
        let submitted = try RosterBinary.run(["submit", "--coordinator", coordinator, "--operator-token", "cli-secret", "big/all.txt"])
        XCTAssertEqual(submitted.status, 0, submitted.stderr)

        func blocksDone() throws -> Int {
            let result = try RosterBinary.run(["call", "--coordinator", coordinator, "--operator-token", "cli-secret",
                                               "IngestAdmin.ListFiles", "{}"])
            guard result.status == 0, case .array(let files)? = try JSONValue(parsing: result.stdout)["files"],
                  case .number(let done)? = files.first?["blocksDone"] else { return -1 }
            return Int(done) ?? -1
        }
        try eventually("some blocks to be done") { try blocksDone() >= 5 }
        XCTAssertEqual(coordinatorProcess.stop(SIGKILL), SIGKILL)

        coordinatorProcess = try RosterService(coordinatorArgs + ["--listen", coordinator], environment: tokens)
        services.append(coordinatorProcess)
        _ = try coordinatorProcess.waitForLine("coordinator listening on")
        try eventually(timeout: 60, "the file to go live after the restart") {
            try RosterBinary.run(["match", "--match", match, "--advertiser", "big", "--email", members[5999]]).status == 0
        }
        let hashes = root.appendingPathComponent("all-hashes.txt")
        try Data(members.map { MemberHash(email: $0).hex }.joined(separator: "\n").utf8).write(to: hashes)
        let all = try RosterBinary.run(["match", "--match", match, "--advertiser", "big", "--file", hashes.path])
        XCTAssertEqual(all.status, 0, all.stderr)
        XCTAssertTrue(all.stderr.contains("6000 of 6000 are members of big"), all.stderr)
        let files = try RosterBinary.run(["call", "--coordinator", coordinator, "--operator-token", "cli-secret",
                                          "IngestAdmin.ListFiles", "{}"])
        let file = try JSONValue(parsing: files.stdout)["files"]
        guard case .array(let list)? = file else { return XCTFail(files.stdout) }
        XCTAssertEqual(list.first?["distinctKeys"], .string("6000"))
        XCTAssertEqual(list.first?["keys"], .string("6000"), "no block counted twice")
    }
}
