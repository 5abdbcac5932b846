using ClickHouse.Driver.ADO.Parameters;

namespace Analytics.Store.Server;

/// <summary>
/// Makes the driver send every parameter as the text <see cref="QueryParameters.Format"/> gives, the
/// same text the embedded engine receives, so a parameter means the same on both backends. The driver's
/// own formatting differs in places (a bool bound to a UInt8 placeholder, DateTime kinds, nested
/// arrays). Values still travel as <c>param_</c> values that ClickHouse parses by the placeholder's
/// type, never as SQL.
/// </summary>
internal sealed class ParameterText : IParameterFormatter, IParameterTypeResolver
{
    public static readonly ParameterText Instance = new();

    private ParameterText()
    {
    }

    public string Format(object value, string typeName, string parameterName) => QueryParameters.Format(value);

    // Consulted only for a parameter the SQL has no {name:Type} placeholder for. Any type the driver
    // knows and does not unwrap will do: the formatter above then supplies the text.
    public string ResolveType(Type clrType, object value, string parameterName) => "String";
}
