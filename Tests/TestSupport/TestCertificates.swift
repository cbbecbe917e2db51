import Foundation
import XCTest

/// Certificates made for one test with Debian's `openssl`: two CAs, and
/// leaves signed by them (nothing is committed, no key outlives the test).
///
/// Names, each `<name>.pem` with `<name>.key` beside it in `folder`:
/// - `ca`, `other-ca`: self-signed CAs.
/// - `server`: localhost and 127.0.0.1, by `ca`; `server-2` the same names
///   with another key (a renewed certificate, for reload tests).
/// - `client`: a client certificate by `ca`; `other-client` by `other-ca`.
/// - `expired`: localhost and 127.0.0.1, by `ca`, valid only on 1 Jan 2020.
/// - `wrong-host`: wrong.example only, by `ca`.
public final class TestCertificates: @unchecked Sendable {
    public let folder: URL

    public static let openssl = "/usr/bin/openssl"

    /// Throws XCTSkip without openssl, except under CI (which installs it).
    public init() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.openssl) else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { XCTFail("CI has no \(Self.openssl) (Debian's openssl)") }
            throw XCTSkip("no \(Self.openssl): cannot make test certificates")
        }
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("roster-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("db"), withIntermediateDirectories: true)
        try Data().write(to: folder.appendingPathComponent("db/index.txt"))
        try Data("1000\n".utf8).write(to: folder.appendingPathComponent("db/serial"))
        try caConfiguration.write(to: folder.appendingPathComponent("ca.cnf"), atomically: true, encoding: .utf8)
        try makeCA("ca", "Roster Test CA")
        try makeCA("other-ca", "Some Other CA")
        let local = "DNS:localhost,IP:127.0.0.1"
        try makeLeaf("server", commonName: "localhost", names: local)
        try makeLeaf("server-2", commonName: "localhost (renewed)", names: local)
        try makeLeaf("client", commonName: "roster-client", names: "DNS:roster-client")
        try makeLeaf("other-client", commonName: "stranger", names: "DNS:stranger", issuer: "other-ca")
        try makeLeaf("expired", commonName: "localhost (expired)", names: local, dates: ("20200101000000Z", "20200102000000Z"))
        try makeLeaf("wrong-host", commonName: "wrong.example", names: "DNS:wrong.example")
    }

    deinit {
        try? FileManager.default.removeItem(at: folder)
    }

    public func certificate(_ name: String) -> String { folder.appendingPathComponent("\(name).pem").path }
    public func key(_ name: String) -> String { folder.appendingPathComponent("\(name).key").path }

    /// Copies `name`'s certificate and key over `target`'s (for reloads).
    public func replace(_ target: String, with name: String) throws {
        for (from, to) in [(certificate(name), certificate(target)), (key(name), key(target))] {
            let temporary = to + ".new"
            try? FileManager.default.removeItem(atPath: temporary)
            try FileManager.default.copyItem(atPath: from, toPath: temporary)
            _ = try FileManager.default.replaceItemAt(URL(fileURLWithPath: to), withItemAt: URL(fileURLWithPath: temporary))
        }
    }

    private func makeCA(_ name: String, _ commonName: String) throws {
        try run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key(name),
                 "-out", certificate(name), "-days", "3", "-subj", "/CN=\(commonName)"])
    }

    private func makeLeaf(_ name: String, commonName: String, names: String, issuer: String = "ca",
                          dates: (String, String)? = nil) throws {
        let request = folder.appendingPathComponent("\(name).csr").path
        try run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key(name), "-out", request,
                 "-subj", "/CN=\(commonName)"])
        let extensions = folder.appendingPathComponent("\(name).ext")
        try "[leaf]\nsubjectAltName=\(names)\nextendedKeyUsage=serverAuth,clientAuth\n".write(to: extensions, atomically: true, encoding: .utf8)
        var arguments = ["ca", "-batch", "-config", folder.appendingPathComponent("ca.cnf").path, "-cert", certificate(issuer),
                         "-keyfile", key(issuer), "-in", request, "-out", certificate(name), "-extfile", extensions.path,
                         "-extensions", "leaf", "-notext"]
        if let (start, end) = dates {
            arguments += ["-startdate", start, "-enddate", end]
        } else {
            arguments += ["-days", "2"]
        }
        try run(arguments)
    }

    private var caConfiguration: String {
        """
        [ca]
        default_ca = test
        [test]
        database = \(folder.path)/db/index.txt
        new_certs_dir = \(folder.path)/db
        serial = \(folder.path)/db/serial
        default_md = sha256
        policy = anything
        unique_subject = no
        [anything]
        commonName = supplied

        """
    }

    private func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.openssl)
        process.arguments = arguments
        process.currentDirectoryURL = folder
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "openssl", code: Int(process.terminationStatus), userInfo: [NSLocalizedDescriptionKey:
                "openssl \(arguments.prefix(1).joined()) failed: \(String(decoding: message, as: UTF8.self))"])
        }
    }
}
