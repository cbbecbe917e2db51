import Foundation
@testable import MatchServer
import SegmentStore
import XCTest

final class ManifestLogTests: XCTestCase {
    private var root: URL!

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("roster-manifest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    /// Replaying the log over the snapshot gives the state; once the log
    /// outgrows the snapshot it is folded into it and starts again empty.
    func testChangesReplayAndTheLogIsCompacted() throws {
        do {
            let log = try ManifestLog(root: root, minimumCompaction: 400)
            try log.record([.init(advertiser: "a", version: 1, segments: ["s/a/1"]), .init(advertiser: "b", version: 1, segments: ["s/b/1"])])
            try log.record([.init(advertiser: "a", version: 2, segments: ["s/a/2"])])
            try log.record([.init(advertiser: "b", version: 0, segments: nil)])
            XCTAssertFalse(FileManager.default.fileExists(atPath: log.snapshotURL.path), "compacted too early")
        }
        var reopened = try ManifestLog(root: root, minimumCompaction: 400)
        XCTAssertEqual(reopened.entries, ["a": .init(version: 2, segments: ["s/a/2"])])
        for v in 3..<12 { try reopened.record([.init(advertiser: "c", version: UInt64(v), segments: [SegmentLocation(path: "s/c/\(v)")])]) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: reopened.snapshotURL.path), "never compacted")
        let logSize = (try FileManager.default.attributesOfItem(atPath: reopened.logURL.path)[.size] as? Int) ?? -1
        XCTAssertLessThan(logSize, 400)
        reopened = try ManifestLog(root: root, minimumCompaction: 400)
        XCTAssertEqual(reopened.entries, ["a": .init(version: 2, segments: ["s/a/2"]), "c": .init(version: 11, segments: ["s/c/11"])])
    }

    /// A crash between writing a snapshot and emptying the log replays the
    /// old log over the new snapshot: the same state.
    func testReplayingAnOldLogOverANewerSnapshotChangesNothing() throws {
        let log = try ManifestLog(root: root, minimumCompaction: 1 << 20)
        try log.record([.init(advertiser: "a", version: 1, segments: ["x"]), .init(advertiser: "a", version: 2, segments: ["y"])])
        let logBytes = try Data(contentsOf: log.logURL)
        try log.compact()
        try logBytes.write(to: log.logURL) // as if the log had not been emptied
        XCTAssertEqual(try ManifestLog(root: root).entries, ["a": .init(version: 2, segments: ["y"])])
    }
}
