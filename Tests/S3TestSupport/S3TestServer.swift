import Foundation
import ObjectStorage
import TestSupport
import XCTest

/// The S3-compatible server the tests talk to: SeaweedFS started by
/// `scripts/s3-test-server.sh` (which `.ci/run` runs), found through
/// `ROSTER_TEST_S3_*`. Without it the tests skip, saying so, unless `CI=true`
/// (or `ROSTER_REQUIRE_S3=1`), where they fail.
public enum S3TestServer {
    public static var environment: [String: String] { ProcessInfo.processInfo.environment }

    public static func endpoint() throws -> (endpoint: String, key: String, secret: String, bucket: String) {
        let env = environment
        guard let endpoint = env["ROSTER_TEST_S3_ENDPOINT"], let key = env["ROSTER_TEST_S3_ACCESS_KEY"],
              let secret = env["ROSTER_TEST_S3_SECRET_KEY"] else {
            throw missingDependency("no S3 test server: run `eval \"$(bash scripts/s3-test-server.sh start)\"` first",
                                    requireVariable: "ROSTER_REQUIRE_S3")
        }
        return (endpoint, key, secret, env["ROSTER_TEST_S3_BUCKET"] ?? "roster-test")
    }

    /// A configuration for a prefix of its own (`<test>-<random>/`), so tests never see each other's objects.
    public static func configuration(_ name: String, endpoint override: String? = nil, bucket: String? = nil,
                              secret: String? = nil, accessKey: String? = nil) throws -> S3Configuration {
        let server = try endpoint()
        var configuration = try S3Configuration.resolve(
            location: "s3://\(bucket ?? server.bucket)/\(name)-\(UInt32.random(in: 0...UInt32.max))",
            endpoint: override ?? server.endpoint, region: "us-east-1",
            credentials: S3Credentials(accessKeyID: accessKey ?? server.key, secretAccessKey: secret ?? server.secret), environment: [:])
        configuration.firstBackoff = .milliseconds(5)
        configuration.maxBackoff = .milliseconds(50)
        configuration.partSize = 5 << 20
        return configuration
    }
}

/// A folder removed when the test's value goes away.
public final class TemporaryFolder {
    public let url: URL
    public init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("roster-s3-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
}
