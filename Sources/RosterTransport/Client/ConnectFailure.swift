#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

/// Why a connection could not be opened, in words: NIO's errors print as
/// nested structures ("Connection errors: SingleConnectionFailure(target:
/// …, error: connection reset (error set): Connection refused) (errno: 111))"),
/// which say what happened only to someone who reads SwiftNIO.
public enum ConnectFailure {
    public static func describe(_ error: any Error, host: String, port: Int, timeout: TimeAmount) -> String {
        if let failure = error as? NIOConnectionError {
            if failure.connectionErrors.isEmpty, failure.dnsAError != nil || failure.dnsAAAAError != nil {
                return "unknown host \(host)"
            }
            let reasons = failure.connectionErrors.map { describe($0.error, host: host, port: port, timeout: timeout) }
            return Array(Set(reasons)).sorted().joined(separator: "; ")
        }
        if let io = error as? IOError {
            switch io.errnoCode {
            case ECONNREFUSED: return "connection refused (is the server running, on this port?)"
            case ETIMEDOUT: return "no answer (timed out)"
            case EHOSTUNREACH: return "no route to host \(host)"
            case ENETUNREACH: return "network unreachable"
            case ECONNRESET: return "connection reset by the server"
            default: return String(cString: strerror(io.errnoCode)).lowercased()
            }
        }
        if let channel = error as? ChannelError, case .connectTimeout = channel {
            return "no answer within \(timeout.nanoseconds / 1_000_000) ms"
        }
        return "\(error)"
    }
}
