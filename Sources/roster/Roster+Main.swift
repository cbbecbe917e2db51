import ArgumentParser
import Foundation
import RosterRPC

/// The version `roster --version` prints.
let rosterVersion = "0.21.0 (commit \(BuildInfo.commit) of \(BuildInfo.commitDate); built \(BuildInfo.buildDate))"

/// Exit statuses, the same for every command, and documented in `roster --help`
/// and the README. A failed call exits 64 + its status code, as grpcurl does,
/// so scripts can tell "the server is down" (78) from "no such advertiser" (69).
enum ExitStatus {
    static let success: Int32 = 0
    /// Anything else that went wrong on this side: a file, a local check.
    static let failure: Int32 = 1
    /// `roster match`: some key asked about is not a member.
    static let notMember: Int32 = 3
    /// A bad command line (EX_USAGE): an unknown flag, a missing or invalid value.
    static let usage: Int32 = 64

    static func call(_ code: RPCStatusCode) -> Int32 { usage + Int32(code.rawValue) }
    /// The reader of standard output went away (128 + SIGPIPE, as a shell reports a tool killed by it).
    static let brokenPipe: Int32 = 141
}

extension Roster {
    /// Parses and runs like ArgumentParser's own `main`, but every error ends
    /// in exactly one `Error:` line on standard error (ArgumentParser adds a
    /// usage block and help lines) and one of the `ExitStatus` codes.
    static func main() async {
        // A closed pipe is an EPIPE the writers handle (`writeStandardOutput`), not a signal that kills.
        signal(SIGPIPE, SIG_IGN)
        let arguments = Array(CommandLine.arguments.dropFirst())
        do {
            var command = try parseAsRoot(arguments)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            let (line, status) = outcome(of: error, arguments: arguments)
            if let line {
                if status == ExitStatus.success {
                    print(line)
                } else {
                    FileHandle.standardError.write(Data("Error: \(line)\n".utf8))
                }
            }
            flushOutput()
            Foundation.exit(status)
        }
    }

    /// What to print for `error` (nil: nothing), and the exit status.
    static func outcome(of error: any Error, arguments: [String]) -> (line: String?, status: Int32) {
        switch error {
        case let exit as ExitCode:
            return (nil, exit.rawValue)
        case let error as CLIError:
            return (error.description, error.status.map(ExitStatus.call) ?? ExitStatus.failure)
        case let error as RPCError:
            return ("\(error)", ExitStatus.call(error.code))
        default:
            let code = exitCode(for: error)
            if code == .success {
                // --help, --version: the whole text, on standard output.
                return (fullMessage(for: error), ExitStatus.success)
            }
            guard code == .validationFailure else {
                return (firstLine(message(for: error)), code.rawValue)
            }
            if let unknown = unknownCommand(in: arguments) { return (unknown, ExitStatus.usage) }
            let command = commandPath(in: arguments)
            // ArgumentParser reports a missing or invalid option before an
            // unknown one, so a misspelled flag would read as a missing flag.
            if let unknown = unknownOption(in: arguments, command: command) {
                return (unknown, ExitStatus.usage)
            }
            return ("\(firstLine(message(for: error))) (see '\(command.path) --help')", ExitStatus.usage)
        }
    }

    /// The message's first line; ArgumentParser's list of the values a flag
    /// takes ("Please provide one of the following:" then "- value" lines)
    /// is folded into it, so the one line still names them.
    static func firstLine(_ text: String) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map { $0.trimmingCharacters(in: .whitespaces) }
        var line = lines.first ?? ""
        let values = lines.dropFirst().prefix { $0.hasPrefix("- ") }.map { String($0.dropFirst(2)) }
        if line.hasSuffix(":") && !values.isEmpty { line += " " + values.joined(separator: ", ") }
        return line
    }

    /// The subcommand the arguments name (or the root), and how to call it.
    static func commandPath(in arguments: [String]) -> (type: any ParsableCommand.Type, path: String) {
        guard let name = arguments.first(where: { !$0.hasPrefix("-") }),
              let sub = configuration.subcommands.first(where: { $0._commandName == name }) else { return (Roster.self, "roster") }
        return (sub, "roster \(name)")
    }

    /// "unknown option '--advertser' (did you mean '--advertiser'?)" for the
    /// first `--flag` the command does not have; nil if every flag is known.
    static func unknownOption(in arguments: [String], command: (type: any ParsableCommand.Type, path: String)) -> String? {
        let help = helpMessage(for: command.type, columns: 1000)
        var known: Set<String> = ["--help", "--version"]
        var scanner = help[...]
        while let range = scanner.range(of: "--") {
            let name = scanner[range.lowerBound...].prefix { $0.isLetter || $0.isNumber || $0 == "-" }
            if name.count > 2 { known.insert(String(name)) }
            scanner = scanner[range.upperBound...]
        }
        for argument in arguments {
            if argument == "--" { break }
            guard argument.hasPrefix("--") else { continue }
            let name = String(argument.prefix { $0 != "=" })
            if known.contains(name) { continue }
            let hint = Suggestion.closest(to: name, among: Array(known), within: 2).map { " (did you mean '\($0)'?)" } ?? ""
            return "unknown option '\(name)'\(hint) (see '\(command.path) --help')"
        }
        return nil
    }

    /// "unknown command 'stauts' (did you mean 'status'?)" when the first
    /// word is not a subcommand; nil when it is one (or is a flag).
    static func unknownCommand(in arguments: [String]) -> String? {
        guard let first = arguments.first, !first.hasPrefix("-") else { return nil }
        let names = configuration.subcommands.map { $0._commandName } + ["help"]
        guard !names.contains(first) else { return nil }
        let hint = Suggestion.closest(to: first, among: names).map { " (did you mean '\($0)'?)" } ?? ""
        return "unknown command '\(first)'\(hint) (see 'roster --help')"
    }
}
