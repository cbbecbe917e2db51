import Synchronization

/// One transport per server address, made on first use and kept: what a
/// caller of many servers (a tier's nodes) holds, so that each server gets
/// one connection pool however many calls go to it.
public final class TransportCache<Transport: Sendable>: Sendable {
    private let make: @Sendable (String) -> Transport
    private let cache = Mutex<[String: Transport]>([:])

    public init(_ make: @escaping @Sendable (String) -> Transport) {
        self.make = make
    }

    /// The transport to `address`.
    public func callAsFunction(_ address: String) -> Transport {
        cache.withLock { cache in
            if let known = cache[address] { return known }
            let made = make(address)
            cache[address] = made
            return made
        }
    }

    /// Every transport made so far (to close them).
    public var all: [Transport] { cache.withLock { Array($0.values) } }
}
