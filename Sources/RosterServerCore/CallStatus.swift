import Logging
import RosterRPC

extension RPCError {
    /// The status a call that failed with `error` answers, whatever carries
    /// it (a TCP connection or an in-process call): an `RPCError` as thrown,
    /// any other `RPCErrorConvertible` as it says, a request that did not
    /// decode as INVALID_ARGUMENT, cancellation as CANCELLED, and anything
    /// else as INTERNAL, whose detail goes to the log rather than to the
    /// caller.
    package static func answering(_ error: any Error, method: RPCMethodDescriptor, peer: String, logger: Logger) -> RPCError {
        switch error {
        case let error as RPCError:
            return error
        case let error as any RPCErrorConvertible:
            return error.rpcError
        case let error as ProtoDecodingError:
            return RPCError(.invalidArgument, "request does not decode as the input of \(method): \(error)")
        case is CancellationError:
            return RPCError(.cancelled, "call cancelled")
        default:
            logger.error("handler failed", metadata: ["method": "\(method)", "error": "\(error)", "peer": "\(peer)"])
            return RPCError(.internal, "internal error in \(method)")
        }
    }
}

