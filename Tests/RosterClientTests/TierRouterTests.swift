import Foundation
import RosterClient
import RosterInProcess
import Synchronization
import XCTest

/// `TierRouter` against stand-ins, in process: a coordinator that answers
/// only Placement, and match servers that answer what each test says.
final class TierRouterTests: XCTestCase {
    /// A match server answering every Match from `version`, or failing with `error`.
    struct FakeNode: RPCService {
        let version: UInt64
        let error: RPCError?
        let calls: Calls
        /// How long it takes to answer (a hung server: longer than the deadline).
        var delay: Duration? = nil

        final class Calls: Sendable {
            let count = Atomic<Int>(0)
        }

        var methods: [RPCServerMethod] {
            [.async(MatchService.Method.match) { (_: MatchRequest, _: RPCContext) async throws -> MatchResponse in
                calls.count.add(1, ordering: .relaxed)
                if let delay { try await Task.sleep(for: delay) }
                if let error { throw error }
                return MatchResponse(matched: true, version: version)
            }]
        }
    }

    /// A coordinator that places every advertiser on `nodes` at `version`.
    struct FakeCoordinator: RPCService {
        let version: UInt64
        let nodes: [String]
        let calls: FakeNode.Calls

        var methods: [RPCServerMethod] {
            [.async(Tier.Method.placement) { (request: PlacementRequest, _: RPCContext) async throws -> PlacementResponse in
                calls.count.add(1, ordering: .relaxed)
                var response = PlacementResponse()
                response.nodes = nodes.map { var node = TierNode(); node.nodeID = $0; node.address = $0; node.healthy = true; return node }
                response.advertisers = request.advertiserIDs.map { advertiser in
                    var placed = AdvertiserPlacement()
                    placed.advertiserID = advertiser
                    placed.version = version
                    placed.nodes = (0..<UInt32(nodes.count)).map { $0 }
                    return placed
                }
                return response
            }]
        }
    }

    private func router(version: UInt64, nodes: [(String, FakeNode)], timeout: Duration = .seconds(2), hedgeAfter: Duration? = nil) throws
        -> (TierRouter<InProcessTransport, InProcessTransport>, FakeNode.Calls) {
        let placements = FakeNode.Calls()
        let coordinator = try InProcessTransport(services: [FakeCoordinator(version: version, nodes: nodes.map(\.0), calls: placements)])
        var transports: [String: InProcessTransport] = [:]
        for (address, node) in nodes { transports[address] = try InProcessTransport(services: [node]) }
        let fixed = transports
        let router = TierRouter(coordinator: Tier.Client(transport: coordinator), configuration: .init(timeout: timeout, hedgeAfter: hedgeAfter)) { fixed[$0]! }
        return (router, placements)
    }

    func testTheNextHolderAnswersWhenTheFirstCannot() async throws {
        for (code, hedge) in [RPCStatusCode.unavailable, .notFound, .deadlineExceeded].flatMap({ [($0, nil), ($0, Duration.milliseconds(100))] }) {
            let first = FakeNode(version: 7, error: RPCError(code, "down"), calls: .init())
            let second = FakeNode(version: 7, error: nil, calls: .init())
            let (router, _) = try router(version: 7, nodes: [("a", first), ("b", second)], hedgeAfter: hedge)
            let answer = try await router.match(advertiser: "acme", hash: Data(count: 16))
            XCTAssertEqual(answer.version, 7, "\(code)")
            XCTAssertEqual(second.calls.count.load(ordering: .relaxed), 1, "\(code)")
        }
    }

    /// A server that failed is tried last for a while: a dead or cut-off
    /// holder costs one attempt, not one per call.
    func testAServerThatFailedIsTriedLastForAWhile() async throws {
        let first = FakeNode(version: 7, error: RPCError(.deadlineExceeded, "no answer"), calls: .init())
        let second = FakeNode(version: 7, error: nil, calls: .init())
        let (router, _) = try router(version: 7, nodes: [("a", first), ("b", second)])
        for _ in 0..<5 { _ = try await router.match(advertiser: "acme", hash: Data(count: 16)) }
        XCTAssertEqual(first.calls.count.load(ordering: .relaxed), 1)
        XCTAssertEqual(second.calls.count.load(ordering: .relaxed), 5)
    }

    /// A server that hangs (a cut link: no refusal, no answer) costs a call
    /// the hedge delay, not its deadline: the next holder is asked too and
    /// its answer wins.
    func testAHungServerIsHedgedAround() async throws {
        let hung = FakeNode(version: 7, error: nil, calls: .init(), delay: .seconds(30))
        let healthy = FakeNode(version: 7, error: nil, calls: .init())
        let (router, _) = try router(version: 7, nodes: [("a", hung), ("b", healthy)], timeout: .seconds(60), hedgeAfter: .milliseconds(100))
        let started = ContinuousClock.now
        let answer = try await router.match(advertiser: "acme", hash: Data(count: 16))
        XCTAssertEqual(answer.version, 7)
        XCTAssertEqual(hung.calls.count.load(ordering: .relaxed), 1)
        XCTAssertEqual(healthy.calls.count.load(ordering: .relaxed), 1)
        // Bounded well below the hung call's 30 s, whatever the machine's load.
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(10))
        // Outrun by the hedge, the hung server is suspected: the next calls
        // go to the healthy one first and wait for nothing.
        for _ in 0..<3 { _ = try await router.match(advertiser: "acme", hash: Data(count: 16)) }
        XCTAssertEqual(hung.calls.count.load(ordering: .relaxed), 1)
        XCTAssertEqual(healthy.calls.count.load(ordering: .relaxed), 4)
    }

    /// Other errors are the answer: a bad request is not retried elsewhere.
    func testAnInvalidRequestIsNotRetried() async throws {
        let first = FakeNode(version: 7, error: RPCError(.invalidArgument, "hash is 3 bytes"), calls: .init())
        let second = FakeNode(version: 7, error: nil, calls: .init())
        let (router, _) = try router(version: 7, nodes: [("a", first), ("b", second)])
        do {
            _ = try await router.match(advertiser: "acme", hash: Data(count: 3))
            XCTFail("answered")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .invalidArgument)
        }
        XCTAssertEqual(second.calls.count.load(ordering: .relaxed), 0)
    }

    /// A server behind the placement (it answers from version 6 when 7 is
    /// live) is never the answer.
    func testAServerBehindThePlacementIsNeverTheAnswer() async throws {
        for hedge in [nil, Duration.milliseconds(100)] {
            let behind = FakeNode(version: 6, error: nil, calls: .init())
            let current = FakeNode(version: 7, error: nil, calls: .init())
            let (router, _) = try router(version: 7, nodes: [("a", behind), ("b", current)], hedgeAfter: hedge)
            let answer = try await router.match(advertiser: "acme", hash: Data(count: 16))
            XCTAssertEqual(answer.version, 7)
            XCTAssertEqual(behind.calls.count.load(ordering: .relaxed), 1)
        }
    }

    /// When every holder fails the placement is asked once more, then the
    /// last error is the answer; placements are cached between calls.
    func testEveryHolderDownAsksThePlacementOnceMoreThenFails() async throws {
        let down = FakeNode(version: 7, error: RPCError(.unavailable, "down"), calls: .init())
        let (router, placements) = try router(version: 7, nodes: [("a", down)])
        do {
            _ = try await router.match(advertiser: "acme", hash: Data(count: 16))
            XCTFail("answered")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .unavailable)
        }
        XCTAssertEqual(placements.count.load(ordering: .relaxed), 2)
        XCTAssertEqual(down.calls.count.load(ordering: .relaxed), 2)

        let up = FakeNode(version: 7, error: nil, calls: .init())
        let (cached, asked) = try self.router(version: 7, nodes: [("a", up)])
        for _ in 0..<5 { _ = try await cached.match(advertiser: "acme", hash: Data(count: 16)) }
        XCTAssertEqual(asked.count.load(ordering: .relaxed), 1, "one placement call for five matches")
    }

    /// An advertiser with no live list is NOT_FOUND, as from one server.
    func testAnAdvertiserWithNoListIsNotFound() async throws {
        let (router, _) = try router(version: 0, nodes: [])
        do {
            _ = try await router.match(advertiser: "nobody", hash: Data(count: 16))
            XCTFail("answered")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .notFound)
        }
    }
}
