import Foundation
import XCTest

/// A test case that runs `roster` processes in a temporary folder of its
/// own: `root` is made before each test; after it, every service started
/// is killed and the folder removed.
class ServicesTestCase: XCTestCase {
    var root: URL!
    var services: [RosterService] = []
    /// The start of the folder's name, to tell whose a leftover is.
    class var folderPrefix: String { "roster-test" }

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("\(Self.folderPrefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDown() {
        for service in services { service.stop(SIGKILL) }
        services = []
        if let root { try? FileManager.default.removeItem(at: root) }
    }
}
