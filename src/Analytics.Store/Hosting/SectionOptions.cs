using System.Collections;
using System.ComponentModel.DataAnnotations;
using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Analytics.Store;

/// <summary>
/// The one way an options class is bound: from its configuration section, validated once at start by
/// <see cref="SectionValidator{TOptions}"/> (DataAnnotations on it and every nested options object, each
/// failure naming its full key, e.g. <c>Limits:Session:MaxLineLength</c>) plus the class's own
/// cross-field <see cref="IValidateOptions{TOptions}"/>, if it has one.
/// </summary>
public static class SectionOptions
{
    public static OptionsBuilder<TOptions> AddSectionOptions<TOptions>(this IServiceCollection services, string section)
        where TOptions : class
    {
        services.AddSingleton<IValidateOptions<TOptions>>(new SectionValidator<TOptions>(section));
        return services.AddOptions<TOptions>().BindConfiguration(section).ValidateOnStart();
    }

    /// <summary>Every DataAnnotations failure of <paramref name="options"/> and its nested options, as <c>Section:Key: message</c>.</summary>
    public static IReadOnlyList<string> Validate(string section, object options)
    {
        var failures = new List<string>();
        Validate(section, options, failures);
        return failures;
    }

    private static void Validate(string path, object options, List<string> failures)
    {
        var results = new List<ValidationResult>();
        Validator.TryValidateObject(options, new ValidationContext(options), results, validateAllProperties: true);
        foreach (var result in results)
        {
            foreach (var member in result.MemberNames.DefaultIfEmpty(""))
            {
                var range = options.GetType().GetProperty(member)?.GetCustomAttribute<RangeAttribute>();
                var allowed = range is null || result.ErrorMessage?.Contains("between", StringComparison.Ordinal) == true ? "" : $" Allowed: {range.Minimum} to {range.Maximum}.";
                failures.Add($"{(member.Length == 0 ? path : path + ":" + member)}: {result.ErrorMessage}{allowed}");
            }
        }

        foreach (var property in options.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (IsOptionsObject(property.PropertyType) && property.GetIndexParameters().Length == 0 && property.GetValue(options) is { } nested)
            {
                Validate(path + ":" + property.Name, nested, failures);
            }
        }
    }

    /// <summary>Nested options are our own classes; strings, lists, dictionaries and time spans are leaves.</summary>
    public static bool IsOptionsObject(Type type) =>
        type.IsClass && type != typeof(string) && !typeof(IEnumerable).IsAssignableFrom(type) && type.Namespace?.StartsWith("Analytics", StringComparison.Ordinal) == true;
}

/// <summary>DataAnnotations on an options class and its nested options, with full key paths (see <see cref="SectionOptions"/>).</summary>
internal sealed class SectionValidator<TOptions>(string section) : IValidateOptions<TOptions>
    where TOptions : class
{
    public string Section { get; } = section;

    public ValidateOptionsResult Validate(string? name, TOptions options) =>
        SectionOptions.Validate(Section, options) is { Count: > 0 } failures ? ValidateOptionsResult.Fail(failures) : ValidateOptionsResult.Success;
}
