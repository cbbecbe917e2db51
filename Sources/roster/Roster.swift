import ArgumentParser
import LoadHarness
import Foundation
import Logging
import RosterAPI
import RosterClient

@main
struct Roster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Membership lists from a data lake, served over the network.",
        discussion: """
            Run everything on this machine:  roster dev
            Drop a list into the lake:       mv members.txt roster-data/lake/acme/
                                             (written elsewhere first: a file is taken
                                             as it appears)
            Ask about one email:             roster match --advertiser acme \\
                                               --email ann@example.com
            Watch files ingest:              roster status --watch

            Exit status (every command): 0 success; 1 an error on this side (a file, a
            check); 3 not a member (roster match); 64 a bad command line; 65-80 a call
            failed with status code 1-16 (64 + code: 68 DEADLINE_EXCEEDED,
            78 UNAVAILABLE, 80 UNAUTHENTICATED).
            """,
        version: rosterVersion,
        subcommands: [
            DevCommand.self, CoordinatorCommand.self, WorkerCommand.self, MatchServerCommand.self,
            SubmitCommand.self, StatusCommand.self, AdvertisersCommand.self, RollbackCommand.self, ApproveCommand.self, MaxShrinkCommand.self, DeleteCommand.self, MatchCommand.self, ExportCommand.self, CallCommand.self,
            LoadCommand.self,
        ])
}

/// A one-line error for the user: printed as `Error: ...`; the exit status
/// is 1, or for a failed call 64 + its status code (see `ExitStatus`).
struct CLIError: Error, CustomStringConvertible {
    var description: String
    /// The status of the call that failed, if one did.
    var status: RPCStatusCode?
    init(_ description: String, status: RPCStatusCode? = nil) {
        self.description = description
        self.status = status
    }
}

/// `host:port`, `[::1]:port` or just `port` (on 127.0.0.1).
struct Endpoint: ExpressibleByArgument, CustomStringConvertible, Sendable {
    var host: String
    var port: Int

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    init?(argument: String) {
        if let port = Int(argument) {
            self.init(host: "127.0.0.1", port: port)
        } else if argument.hasPrefix("["), let close = argument.firstIndex(of: "]") {
            let host = String(argument[argument.index(after: argument.startIndex)..<close])
            let rest = argument[argument.index(after: close)...]
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()) else { return nil }
            self.init(host: host, port: port)
        } else {
            let parts = argument.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]), !parts[0].isEmpty else { return nil }
            self.init(host: String(parts[0]), port: port)
        }
        guard (0...65535).contains(port) else { return nil }
    }

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    var defaultValueDescription: String { description }
}

/// One or more `host:port`s, comma-separated: coordinators sharing a
/// catalog, of which calls find the leader (`FailoverTransport`).
struct Endpoints: ExpressibleByArgument, CustomStringConvertible, Sendable {
    var all: [Endpoint]

    init(_ all: [Endpoint]) { self.all = all }

    init?(argument: String) {
        let parsed = argument.split(separator: ",").map { Endpoint(argument: $0.trimmingCharacters(in: .whitespaces)) }
        guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }) else { return nil }
        all = parsed.map { $0! }
    }

    var description: String { all.map(\.description).joined(separator: ",") }
    var defaultValueDescription: String { description }
}

enum Defaults {
    static let coordinator = Endpoint(host: "127.0.0.1", port: 7400)
    static let match = Endpoint(host: "127.0.0.1", port: 7401)
}

/// An address in the environment that does not parse is an error, not a silent default.
private func checkEnvironment(_ name: String, flag: String, given: Bool, parses: (String) -> Bool, note: String = "") throws {
    if !given, let value = ProcessInfo.processInfo.environment[name], !value.isEmpty, !parses(value) {
        throw ValidationError("\(name)='\(value)' is not host:port\(note); fix it or pass \(flag)")
    }
}

/// Where the coordinator is, and the operator's token its IngestAdmin calls present.
struct OperatorAccess: ParsableArguments {
    @Option(help: "The coordinator's address (host:port), or several coordinators' (a:7400,b:7400): calls go to the leader; from $ROSTER_COORDINATOR if set.")
    var coordinator: Endpoints = Endpoints(argument: ProcessInfo.processInfo.environment["ROSTER_COORDINATOR"] ?? "") ?? Endpoints([Defaults.coordinator])

    @Option(help: "Operator (or viewer) token for the coordinator's IngestAdmin calls (default: $ROSTER_OPERATOR_TOKEN).")
    var operatorToken: String? = ProcessInfo.processInfo.environment["ROSTER_OPERATOR_TOKEN"]

    func validate() throws {
        try checkEnvironment("ROSTER_COORDINATOR", flag: "--coordinator", given: coordinator.description != Defaults.coordinator.description,
                             parses: { Endpoints(argument: $0) != nil }, note: " (or several, comma-separated)")
    }
}

/// Where the match server is.
struct MatchAddress: ParsableArguments {
    @Option(help: "The match server's address (host:port); from $ROSTER_MATCH if set.")
    var match: Endpoint = Endpoint(argument: ProcessInfo.processInfo.environment["ROSTER_MATCH"] ?? "") ?? Defaults.match

    func validate() throws {
        try checkEnvironment("ROSTER_MATCH", flag: "--match", given: match.description != Defaults.match.description,
                             parses: { Endpoint(argument: $0) != nil })
    }
}

/// How every call is made: its deadline and TLS.
struct CallSettings: ParsableArguments {
    @Option(help: "How long to wait for each call (10s, 500ms; 0: no deadline).")
    var timeout: DurationArgument = DurationArgument(argument: "10s")!

    @OptionGroup(title: "TLS") var tls: TLSClientOptions

    func validate() throws {
        guard timeout.duration >= .zero else { throw ValidationError("--timeout must be 0 (no deadline) or a duration") }
    }

    /// --timeout 0 means no deadline (docs/PROTOCOL.md).
    var callOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout.duration > .zero ? timeout.duration : nil
        return options
    }

    /// TLS for this command's connections, or nil for plaintext.
    func clientTLS() throws -> ClientTLS? { try tls.clientTLS() }
}

/// For commands that talk to the coordinator only (status, submit, advertisers, rollback, delete).
struct CoordinatorClientOptions: ParsableArguments {
    @OptionGroup var access: OperatorAccess
    @OptionGroup var settings: CallSettings

    var coordinator: Endpoints { access.coordinator }
    func operatorOptions() -> CallOptions { settings.callOptions.bearer(access.operatorToken) }
    func clientTLS() throws -> ClientTLS? { try settings.clientTLS() }

    /// Runs `body` with an `IngestAdmin` client of the coordinators (the leader's, by failover).
    func withAdmin<T>(_ body: (IngestAdmin.Client<FailoverTransport<RPCClient>>) async throws -> T) async throws -> T {
        try await withCoordinator(coordinator, tls: try clientTLS()) { try await body(IngestAdmin.Client(transport: $0)) }
    }

    /// One `IngestAdmin` call with the operator's token; a failure is one
    /// line, "`what`: …".
    func admin<T>(_ what: String, _ call: (IngestAdmin.Client<FailoverTransport<RPCClient>>, CallOptions) async throws -> T) async throws -> T {
        let options = operatorOptions()
        return try await withAdmin { coordinator in try await userFacing(what) { try await call(coordinator, options) } }
    }
}

/// For commands that make MatchAdmin calls only (export).
struct AdminClientOptions: ParsableArguments {
    @OptionGroup var address: MatchAddress

    @Option(help: "Admin token for MatchAdmin calls (default: $ROSTER_ADMIN_TOKEN).")
    var adminToken: String? = ProcessInfo.processInfo.environment["ROSTER_ADMIN_TOKEN"]

    @OptionGroup var settings: CallSettings

    var match: Endpoint { address.match }
    func adminOptions() -> CallOptions { settings.callOptions.bearer(adminToken) }
    func clientTLS() throws -> ClientTLS? { try settings.clientTLS() }
}

/// Where to find every service, for commands that may call any (match, call, load).
struct ClientOptions: ParsableArguments {
    @OptionGroup var coordinatorAccess: OperatorAccess
    @OptionGroup var matchAddress: MatchAddress

    @Option(help: "Client token for match and placement calls (default: $ROSTER_TOKEN).")
    var token: String? = ProcessInfo.processInfo.environment["ROSTER_TOKEN"]

    @Option(help: "Admin token for MatchAdmin calls (default: $ROSTER_ADMIN_TOKEN).")
    var adminToken: String? = ProcessInfo.processInfo.environment["ROSTER_ADMIN_TOKEN"]

    @OptionGroup var settings: CallSettings

    var coordinator: Endpoints { coordinatorAccess.coordinator }
    var operatorToken: String? { coordinatorAccess.operatorToken }
    var match: Endpoint { matchAddress.match }
    /// The deadline of each call; nil: none (`--timeout 0`).
    var timeout: Duration? { settings.timeout.duration > .zero ? settings.timeout.duration : nil }
    var callOptions: CallOptions { settings.callOptions }

    /// TLS for this command's connections, or nil for plaintext.
    func clientTLS() throws -> ClientTLS? { try settings.clientTLS() }
}

struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical; from $ROSTER_LOG_LEVEL if set.")
    var logLevel: Logger.Level = Logger.Level(rawValue: ProcessInfo.processInfo.environment["ROSTER_LOG_LEVEL"] ?? "") ?? .info

    /// A level in the environment that is not one is an error, not a silent default.
    func validate() throws {
        if let value = ProcessInfo.processInfo.environment["ROSTER_LOG_LEVEL"], !value.isEmpty, Logger.Level(rawValue: value) == nil {
            throw ValidationError("ROSTER_LOG_LEVEL='\(value)' is not a log level: use one of \(Logger.Level.allValueStrings.joined(separator: ", "))")
        }
    }

    func bootstrap() {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {
    /// Named in the error for a value that is not a level.
    public static var allValueStrings: [String] { allCases.map(\.rawValue) }
}

/// A duration on the command line: `30s`, `500ms`, `2m`, or a bare number
/// of seconds (`30`, as flags took before); `0` where a flag allows it.
/// Every duration flag takes one, so that they all read alike.
struct DurationArgument: ExpressibleByArgument, CustomStringConvertible {
    var duration: Duration
    /// As the user wrote it (help shows a default as `10s`, not as a struct).
    var description: String

    init?(argument: String) {
        if let zero = Double(argument.trimmingCharacters(in: CharacterSet(charactersIn: "ms"))), zero == 0, !argument.isEmpty {
            duration = .zero
        } else {
            guard let duration = RateSchedule.duration(argument) else { return nil }
            self.duration = duration
        }
        description = argument
    }

    var defaultValueDescription: String { description }
}

/// A share as a flag's value: a percentage (`50%`) or a fraction (`0.5`),
/// from 0 to 1.
struct ShareArgument: ExpressibleByArgument, CustomStringConvertible {
    var share: Double
    var description: String

    init?(argument: String) {
        let text = argument.trimmingCharacters(in: .whitespaces)
        if text.hasSuffix("%") {
            guard let percent = Double(text.dropLast()) else { return nil }
            share = percent / 100
        } else {
            guard let fraction = Double(text) else { return nil }
            share = fraction
        }
        guard share.isFinite, (0...1).contains(share) else { return nil }
        description = argument
    }

    var defaultValueDescription: String { description }
}


/// Runs `body`, turning transport and RPC failures into one-line errors.
func userFacing<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as CLIError {
        throw error
    } catch let error as RPCError {
        throw CLIError("\(what): \(error)", status: error.code)
    } catch {
        throw CLIError("\(what): \(error)")
    }
}

/// Comma-separated tokens from the environment variable `name`.
func tokens(fromEnvironment name: String) -> Set<String> {
    Set((ProcessInfo.processInfo.environment[name] ?? "").split(separator: ",")
        .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
}

/// Writes bytes to standard output. A reader that went away (`roster export
/// | head -1`) ends the command quietly with status 141, as a Unix tool
/// killed by SIGPIPE would (`main` ignores the signal so that the write
/// fails with EPIPE instead), not with a crash and a backtrace.
func writeStandardOutput(_ data: Data) {
    fflush(nil) // what print() buffered goes first
    data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(STDOUT_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
            if n > 0 { offset += n; continue }
            if n < 0 && errno == EINTR { continue }
            Foundation.exit(errno == EPIPE ? ExitStatus.brokenPipe : ExitStatus.failure)
        }
    }
}

/// Flushes standard output, so that lines reach a pipe (a test, `tee`) as they are printed.
func flushOutput() {
    fflush(nil)
}
