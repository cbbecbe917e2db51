/// Why certificates or keys could not be used: one line a user can act on,
/// naming the file at fault.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Why a TLS connection failed or was refused, said for the side that reads
/// it (see `TLSFailure.describe`).
public struct TLSFailure: Error, CustomStringConvertible, Sendable {
    public var message: String
    /// The peer closed the connection mid-handshake and said nothing more:
    /// what a TCP health check or a port scan does, not worth a warning.
    public var peerClosed: Bool
    public init(_ message: String, peerClosed: Bool = false) {
        self.message = message
        self.peerClosed = peerClosed
    }
    public var description: String { message }
}
