import Logging
import ServiceLifecycle

/// Re-verifies every live segment's checksums in the background, pass after
/// pass, at a bounded read rate (see `MatchCatalog.scrub`). A restart
/// checks what it loads; the scrubber finds what rots on disk afterwards.
public struct Scrubber: Service {
    public let catalog: MatchCatalog
    /// Bytes of keys verified per second, on average; 0 stops scrubbing.
    public let bytesPerSecond: Int
    /// The pause between two passes.
    public let interval: Duration
    private let logger: Logger

    public init(catalog: MatchCatalog, bytesPerSecond: Int, interval: Duration = .seconds(60),
                logger: Logger = Logger(label: "roster.match.scrub")) {
        self.catalog = catalog
        self.bytesPerSecond = bytesPerSecond
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        // A service that returns ends its whole group: with scrubbing off,
        // wait for shutdown like the others.
        guard bytesPerSecond > 0 else {
            try? await gracefulShutdown()
            return
        }
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let damaged = await catalog.scrub(bytesPerSecond: bytesPerSecond)
                if !damaged.isEmpty {
                    logger.error("scrub found damaged lists", metadata: [
                        "count": "\(damaged.count)", "first": "\(damaged.prefix(10).joined(separator: ","))"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
