import RosterRPC

/// Every message and method of Roster's schema (schema/*.rdl), for tools
/// that work from JSON (`roster call`): the registries generated for each
/// file, by audience, in one place.
public enum RosterSchema {
    public static let messages: [any ProtoJSONMessage.Type] =
        MatchSchema.messages + AdminSchema.messages + IngestSchema.messages + WorkSchema.messages

    public static let methods: [MethodDescription] =
        MatchSchema.methods + AdminSchema.methods + IngestSchema.methods + WorkSchema.methods
}
