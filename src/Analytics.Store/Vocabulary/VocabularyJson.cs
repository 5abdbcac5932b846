using System.Text.Json;
using System.Text.Json.Serialization;

namespace Analytics;

/// <summary>Threat classes in JSON as the tables write them: <c>"brute_force"</c>, not a number or <c>"BruteForce"</c>.</summary>
internal sealed class ThreatClassJsonConverter : JsonConverter<ThreatClass>
{
    public override ThreatClass Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        ThreatClasses.Parse(reader.GetString() ?? "");

    public override void Write(Utf8JsonWriter writer, ThreatClass value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToText());
}

/// <summary>Entity kinds in JSON as the tables write them: <c>"user"</c>, <c>"ip"</c>, <c>"net"</c>.</summary>
internal sealed class EntityKindJsonConverter : JsonConverter<EntityKind>
{
    public override EntityKind Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        EntityKinds.Parse(reader.GetString() ?? "");

    public override void Write(Utf8JsonWriter writer, EntityKind value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToText());
}
