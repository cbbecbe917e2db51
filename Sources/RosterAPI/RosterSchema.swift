import RosterRPC

/// Every message, enum and method of Roster's schema (schema/*.rdl), for tools
/// that work from JSON (`roster call`): the registries generated for each
/// file, by audience, in one place.
public enum RosterSchema {
    public static let messages: [any ProtoJSONMessage.Type] =
        MatchSchema.messages + AdminSchema.messages + IngestSchema.messages + WorkSchema.messages + TierSchema.messages

    public static let enums: [any ProtoJSONEnum.Type] =
        MatchSchema.enums + AdminSchema.enums + IngestSchema.enums + WorkSchema.enums + TierSchema.enums

    public static let methods: [MethodDescription] =
        MatchSchema.methods + AdminSchema.methods + IngestSchema.methods + WorkSchema.methods + TierSchema.methods
}
