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
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
