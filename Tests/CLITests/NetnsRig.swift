import Foundation
import TestSupport
import XCTest

/// Hosts for multi-host tests on one machine: each a Linux network
/// namespace with one interface on a bridge, which itself lives in a
/// namespace of the rig's own, so no traffic touches the machine's network.
/// Addresses are in 10.77.<n>.0/24, a subnet that exists only inside the rig.
///
///     let rig = try NetnsRig(hosts: ["coord", "m1", "m2", "client"])
///     defer { rig.remove() }
///     rig.address("m1")        // "10.77.n.2"
///     try rig.cut("m1")        // its cable pulled: packets to and from it are dropped
///     try rig.restore("m1")
///
/// Needs root and iproute2 (`ip`); skips without them (fails under CI).
final class NetnsRig {
    static let ip = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"

    /// Namespace names start with this; interfaces too (kept under 15 characters).
    let prefix: String
    private let subnet: Int
    private(set) var hosts: [String] = []
    private var removed = false

    init(hosts names: [String]) throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: Self.ip) else {
            throw missingDependency("network namespaces need root and iproute2 (apt-get install iproute2)", requireVariable: "ROSTER_REQUIRE_NETNS")
        }
        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        prefix = "rn\(tag)"
        subnet = Int.random(in: 1...250)
        do {
            try run("netns", "add", switchName)
            try run("-n", switchName, "link", "add", "br0", "type", "bridge")
            try run("-n", switchName, "link", "set", "br0", "up")
            for name in names { try add(name) }
        } catch {
            remove()
            throw error
        }
    }

    deinit { remove() }

    private var switchName: String { "\(prefix)-sw" }
    func namespace(_ host: String) -> String { "\(prefix)-\(host)" }
    private func hostPort(_ index: Int) -> String { "\(prefix)h\(index)" }
    private func switchPort(_ index: Int) -> String { "\(prefix)s\(index)" }

    /// The host's address on the rig.
    func address(_ host: String) -> String {
        "10.77.\(subnet).\(hosts.firstIndex(of: host)! + 2)"
    }

    /// Adds a host (a new namespace with loopback and one interface on the bridge).
    func add(_ host: String) throws {
        let index = hosts.count
        hosts.append(host)
        let ns = namespace(host)
        try run("netns", "add", ns)
        try run("-n", ns, "link", "set", "lo", "up")
        try run("link", "add", hostPort(index), "netns", ns, "type", "veth", "peer", "name", switchPort(index), "netns", switchName)
        try run("-n", switchName, "link", "set", switchPort(index), "master", "br0", "up")
        try run("-n", ns, "addr", "add", "\(address(host))/24", "dev", hostPort(index))
        try run("-n", ns, "link", "set", hostPort(index), "up")
    }

    /// Pulls the host's cable: its port on the bridge goes down, and every
    /// packet to or from it is dropped (no reset, no refusal).
    func cut(_ host: String) throws {
        try run("-n", switchName, "link", "set", switchPort(hosts.firstIndex(of: host)!), "down")
    }

    func restore(_ host: String) throws {
        try run("-n", switchName, "link", "set", switchPort(hosts.firstIndex(of: host)!), "up")
    }

    /// Deletes every namespace of the rig (their interfaces go with them).
    func remove() {
        guard !removed else { return }
        removed = true
        for host in hosts { try? run("netns", "delete", namespace(host)) }
        try? run("netns", "delete", switchName)
    }

    @discardableResult
    private func run(_ args: String...) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.ip)
        process.arguments = args
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "NetnsRig", code: Int(process.terminationStatus),
                          userInfo: [NSLocalizedDescriptionKey: "ip \(args.joined(separator: " ")): \(message)"])
        }
        return message
    }
}
