import IngestCoordinator
import Logging
import MatchServer
import RosterAPI
import RosterInProcess
import RosterRPC
import TestSupport
import XCTest

/// Least privilege on the coordinator: each audience's token can make its
/// own audience's calls and no other (docs/OPERATIONS.md, "Who may call
/// what"). Every method of the three services is tried with every token.
final class CoordinatorAccessTests: XCTestCase {
    var harness: IngestHarness!

    static let access = CoordinatorAccess(operatorTokens: ["op"], viewerTokens: ["view"], workerTokens: ["work"],
                                          nodeTokens: ["node"], clientTokens: ["app"])

    override func setUp() async throws {
        harness = try IngestHarness(policy: IngestHarness.testPolicy())
        try await harness.startMatchServer()
        try await harness.startCoordinator(access: Self.access)
    }

    override func tearDown() async throws {
        await harness.shutdown()
    }

    /// The coordinator's methods, by their short name (`IngestAdmin.Status`).
    private var coordinatorMethods: [MethodDescription] {
        RosterSchema.methods.filter { [IngestAdmin.name, TaskQueue.name, Tier.name].contains($0.descriptor.service) }
    }

    /// Calls `method` with an empty request and `token`; returns the status
    /// it answered (OK, or a failure past the token check, such as
    /// INVALID_ARGUMENT for the empty request, counts as let through).
    private func call(_ method: MethodDescription, token: String?) async -> RPCStatusCode {
        var options = CallOptions(timeout: .seconds(5)).bearer(token)
        options.metadata["x-test"] = method.shortName
        do {
            _ = try await method.call(.object([]), on: harness.coordinatorLink, options: options)
            return .ok
        } catch let error as RPCError {
            return error.code
        } catch {
            XCTFail("\(method.shortName): \(error)")
            return .unknown
        }
    }

    /// Which methods each token may call; every other is PERMISSION_DENIED.
    func testEachTokenCallsOnlyItsAudiencesMethods() async throws {
        let reads: Set<String> = ["IngestAdmin.Status", "IngestAdmin.ListFiles", "IngestAdmin.ListAdvertisers"]
        let admin = Set(coordinatorMethods.map(\.shortName).filter { $0.hasPrefix("IngestAdmin.") })
        let tasks = Set(coordinatorMethods.map(\.shortName).filter { $0.hasPrefix("TaskQueue.") })
        XCTAssertEqual(admin.count, 10)
        XCTAssertEqual(tasks.count, 4)
        let allowed: [String: Set<String>] = [
            "op": admin,
            "view": reads,
            "work": tasks,
            "node": ["Tier.RegisterNode", "Tier.Placement"],
            "app": ["Tier.Placement"],
        ]
        for (token, permitted) in allowed.sorted(by: { $0.key < $1.key }) {
            for method in coordinatorMethods {
                let code = await call(method, token: token)
                if permitted.contains(method.shortName) {
                    XCTAssertFalse([.permissionDenied, .unauthenticated].contains(code), "\(token) may call \(method.shortName): \(code)")
                } else {
                    XCTAssertEqual(code, .permissionDenied, "\(token) must not call \(method.shortName)")
                }
            }
        }
        // No token, or one nobody issued: UNAUTHENTICATED, for every method.
        for method in coordinatorMethods {
            let none = await call(method, token: nil)
            XCTAssertEqual(none, .unauthenticated, method.shortName)
            let unknown = await call(method, token: "guess")
            XCTAssertEqual(unknown, .unauthenticated, method.shortName)
        }
    }

    /// A refusal says which token the call needs, in words.
    func testARefusalNamesTheTokenTheCallNeeds() async throws {
        let error = await assertStatus(.permissionDenied) {
            _ = try await self.harness.adminClient.deleteAdvertiser(DeleteAdvertiserRequest(advertiserID: "acme"),
                                                                    options: CallOptions().bearer("work"))
        }
        XCTAssertEqual(error?.message, "a worker token cannot call roster.v1.IngestAdmin/DeleteAdvertiser: it needs an operator token")
        let viewer = await assertStatus(.permissionDenied) {
            _ = try await self.harness.adminClient.rollback(RollbackRequest(advertiserID: "acme"), options: CallOptions().bearer("view"))
        }
        XCTAssertTrue(viewer?.message.contains("a viewer token cannot call roster.v1.IngestAdmin/Rollback") == true, viewer?.message ?? "")
    }

    /// A client token reads placement from the coordinator and matches on a
    /// match server with the same token, and can do nothing else on either.
    func testAnApplicationsTokenReadsPlacementAndMatchesOnly() async throws {
        // This coordinator has no tier: it places nothing, but answers.
        let placement = try await harness.tierClient.placement(PlacementRequest(advertiserIDs: ["acme"]), options: CallOptions().bearer("app"))
        XCTAssertEqual(placement.replicas, 0)

        let catalog = try MatchCatalog(root: harness.storeRoot.appendingPathComponent("app"), logger: Logger(label: "test.match"))
        let policy = AccessPolicy(clientTokens: ["app"], adminTokens: ["adm"])
        let match = try InProcessTransport(services: [MatchHandler(catalog: catalog, access: policy), AdminHandler(catalog: catalog, access: policy)])
        let asked = await assertStatus(.notFound) {
            _ = try await MatchService.Client(transport: match).match(MatchRequest(advertiserID: "acme", hash: Data(count: 16)),
                                                                      options: CallOptions().bearer("app"))
        }
        XCTAssertEqual(asked?.message, "advertiser 'acme' has no published list", "past the token check")
        await assertStatus(.permissionDenied) {
            _ = try await MatchAdmin.Client(transport: match).unpublish(UnpublishRequest(advertiserID: "acme"), options: CallOptions().bearer("app"))
        }
    }

    /// A client built before the split calls service id 3: it is told at
    /// once what replaced the method, not left with an unknown id.
    func testTheRetiredServiceSaysWhatReplacedEachMethod() async throws {
        let old = RPCMethodDescriptor(service: "roster.v1.Coordinator", method: "DeleteAdvertiser", id: 3 << 16 | 8)
        let error = await assertStatus(.unimplemented) {
            let _: DeleteAdvertiserResponse = try await self.harness.coordinatorLink.unary(old, request: DeleteAdvertiserRequest(advertiserID: "acme"),
                                                                                           options: CallOptions().bearer("op"))
        }
        XCTAssertEqual(error?.message, "roster.v1.Coordinator/DeleteAdvertiser is retired: the coordinator serves each audience apart; "
            + "call roster.v1.IngestAdmin/DeleteAdvertiser with an operator token (docs/OPERATIONS.md)")
        let lease = RPCMethodDescriptor(service: "roster.v1.Coordinator", method: "LeaseTasks", id: 3 << 16 | 10)
        let leased = await assertStatus(.unimplemented) {
            let _: LeaseTasksResponse = try await self.harness.coordinatorLink.unary(lease, request: LeaseTasksRequest(workerID: "w"), options: .defaults)
        }
        XCTAssertTrue(leased?.message.contains("call roster.v1.TaskQueue/LeaseTasks with a worker token") == true, leased?.message ?? "")
    }
}
