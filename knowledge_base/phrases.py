"""The fixed sentences of an answer, in the six languages (knowledge_base.catalog.LANGUAGES).

Only the sentences that carry the verdict and the action are translated: first aid, "do not eat
it", the verdict of a photo and its dangerous candidates, asking which mushroom. Catalog details
(symptoms, features, habitat) are English; a reply in another language says so once.
Emergency numbers are examples per country; 112 works across the EU.
"""

from __future__ import annotations

FIRST_AID = {
    "en": "⚠️ Possible poisoning: call a poison centre or emergency number NOW (Europe 112; US 911 or Poison Help "
          "1-800-222-1222; UK 111), even without symptoms. Keep the mushroom, leftovers and photos; note the time "
          "of the meal.",
    "de": "⚠️ Mögliche Pilzvergiftung: JETZT den Giftnotruf oder 112 anrufen (z. B. Giftnotruf Berlin 030 19240, "
          "Österreich 01 406 43 43, Schweiz 145), auch ohne Beschwerden. Pilz, Reste und Fotos aufbewahren; "
          "Uhrzeit der Mahlzeit notieren.",
    "fr": "⚠️ Intoxication possible : appelez MAINTENANT un centre antipoison ou le 15 / 112 (Belgique "
          "070 245 245, Suisse 145), même sans symptômes. Gardez le champignon, les restes et des photos ; notez "
          "l'heure du repas.",
    "es": "⚠️ Posible intoxicación: llame YA al 112 o a Información Toxicológica (España 91 562 04 20), aunque aún "
          "no haya síntomas. Guarde la seta, los restos y fotos; anote la hora de la comida.",
    "it": "⚠️ Possibile avvelenamento: chiami SUBITO il 112/118 o un Centro Antiveleni (es. Niguarda Milano "
          "02 6610 1029), anche senza sintomi. Conservi il fungo, gli avanzi e le foto; annoti l'ora del pasto.",
    "nl": "⚠️ Mogelijke vergiftiging: bel NU 112 of de huisarts(enpost) (België: Antigifcentrum 070 245 245), ook "
          "zonder klachten. Bewaar de paddenstoel, restjes en foto's; noteer het tijdstip van de maaltijd.",
}
FIRST_AID_PET = {
    "en": "⚠️ Your animal may be poisoned: call your vet or an animal poison line NOW, even without symptoms. Keep "
          "the mushroom, leftovers and photos; note the time it ate.",
    "de": "⚠️ Ihr Tier könnte vergiftet sein: JETZT den Tierarzt oder tierärztlichen Notdienst anrufen, auch ohne "
          "Beschwerden. Pilz, Reste und Fotos aufbewahren; Uhrzeit notieren.",
    "fr": "⚠️ Votre animal est peut-être intoxiqué : appelez MAINTENANT votre vétérinaire ou un centre antipoison "
          "vétérinaire, même sans symptômes. Gardez le champignon, les restes et des photos ; notez l'heure.",
    "es": "⚠️ Su animal puede estar intoxicado: llame YA a su veterinario o a urgencias veterinarias, aunque no haya "
          "síntomas. Guarde la seta, los restos y fotos; anote la hora.",
    "it": "⚠️ Il suo animale potrebbe essere avvelenato: chiami SUBITO il veterinario o il pronto soccorso "
          "veterinario, anche senza sintomi. Conservi il fungo, gli avanzi e le foto; annoti l'ora.",
    "nl": "⚠️ Uw dier kan vergiftigd zijn: bel NU uw dierenarts of de dierenartsenspoedpost, ook zonder klachten. "
          "Bewaar de paddenstoel, restjes en foto's; noteer het tijdstip.",
}
# One line for a dangerous species' answer that is not about a meal.
IF_EATEN = {
    "en": "If anyone ate it: call a poison centre or emergency number now (112 / 911), even without symptoms.",
    "de": "Falls jemand davon gegessen hat: sofort Giftnotruf oder 112 anrufen, auch ohne Beschwerden.",
    "fr": "Si quelqu'un en a mangé : appelez tout de suite un centre antipoison ou le 15 / 112, même sans symptômes.",
    "es": "Si alguien la ha comido: llame ya al 112 o a Información Toxicológica, aunque no haya síntomas.",
    "it": "Se qualcuno ne ha mangiato: chiami subito il 112/118 o un Centro Antiveleni, anche senza sintomi.",
    "nl": "Heeft iemand ervan gegeten: bel meteen 112 of de huisarts(enpost), ook zonder klachten.",
}
# Said after first aid: why waiting is wrong, and the false recovery.
DELAYED = {
    "en": "Symptoms 6 hours or more after the meal point to amatoxins (death cap) or orellanine (webcaps); feeling "
          "better later can be a false recovery. Do not make anyone vomit unless told to.",
    "de": "Beschwerden erst 6 Stunden oder später nach der Mahlzeit deuten auf Amatoxine (Knollenblätterpilz) oder "
          "Orellanin (Schleierlinge); eine spätere Besserung kann trügen. Kein Erbrechen auslösen, außer auf Anweisung.",
    "fr": "Des symptômes 6 heures ou plus après le repas évoquent les amatoxines (amanite phalloïde) ou l'orellanine "
          "(cortinaires) ; une amélioration ensuite peut être trompeuse. Ne faites pas vomir sans avis médical.",
    "es": "Síntomas 6 horas o más después de la comida apuntan a amatoxinas (oronja verde) u orellanina "
          "(cortinarios); una mejoría posterior puede ser engañosa. No provoque el vómito salvo que se lo indiquen.",
    "it": "Sintomi 6 ore o più dopo il pasto fanno pensare ad amatossine (tignosa verdognola) o orellanina "
          "(cortinari); un miglioramento successivo può essere ingannevole. Non provochi il vomito se non indicato.",
    "nl": "Klachten 6 uur of later na de maaltijd wijzen op amatoxinen (groene knolamaniet) of orellanine "
          "(gordijnzwammen); later beter voelen kan schijnherstel zijn. Laat niemand overgeven tenzij dat gezegd wordt.",
}
VERDICT = {  # how a verdict reads in a sentence: "<name>: DEADLY."
    "en": {"deadly": "DEADLY", "poisonous": "POISONOUS", "unknown": "UNKNOWN - treat it as poisonous",
           "inedible": "inedible - do not eat", "edible_with_caution": "edible only with caution (experts)",
           "edible": "listed as edible (never on the word of an app)"},
    "de": {"deadly": "TÖDLICH GIFTIG", "poisonous": "GIFTIG", "unknown": "UNBEKANNT - wie giftig behandeln",
           "inedible": "ungenießbar - nicht essen", "edible_with_caution": "nur mit Vorsicht essbar (Fachleute)",
           "edible": "als essbar geführt (nie auf das Wort einer App)"},
    "fr": {"deadly": "MORTEL", "poisonous": "TOXIQUE", "unknown": "INCONNU - à traiter comme toxique",
           "inedible": "non comestible - ne pas manger", "edible_with_caution": "comestible seulement avec prudence",
           "edible": "réputé comestible (jamais sur la foi d'une appli)"},
    "es": {"deadly": "MORTAL", "poisonous": "VENENOSA", "unknown": "DESCONOCIDA - trátela como venenosa",
           "inedible": "no comestible - no la coma", "edible_with_caution": "comestible solo con precaución",
           "edible": "considerada comestible (nunca por lo que diga una app)"},
    "it": {"deadly": "MORTALE", "poisonous": "VELENOSO", "unknown": "SCONOSCIUTO - da trattare come velenoso",
           "inedible": "non commestibile - non mangiarlo", "edible_with_caution": "commestibile solo con cautela",
           "edible": "considerato commestibile (mai sulla parola di un'app)"},
    "nl": {"deadly": "DODELIJK", "poisonous": "GIFTIG", "unknown": "ONBEKEND - behandel als giftig",
           "inedible": "oneetbaar - niet eten", "edible_with_caution": "alleen met voorzichtigheid eetbaar",
           "edible": "als eetbaar vermeld (nooit op het woord van een app)"},
}
SPECIES_IS = {"en": "{name}: {verdict}.", "de": "{name}: {verdict}.", "fr": "{name} : {verdict}.",
              "es": "{name}: {verdict}.", "it": "{name}: {verdict}.", "nl": "{name}: {verdict}."}
# "can I eat it?" about something dangerous or unknown.
NO_EAT = {"en": "No - do not eat it.", "de": "Nein - nicht essen.", "fr": "Non - ne le mangez pas.",
          "es": "No, no la coma.", "it": "No, non mangiarlo.", "nl": "Nee - niet eten."}
# "can I eat it?" about a species the catalog lists as edible: still no permission.
NOT_FROM_ME = {
    "en": "I can't tell you to eat it: only an expert who holds the mushroom can.",
    "de": "Das kann ich nicht freigeben: nur eine Fachperson, die den Pilz in der Hand hat.",
    "fr": "Je ne peux pas vous dire de le manger : seul un expert qui a le champignon en main le peut.",
    "es": "No puedo decirle que la coma: solo un experto que tenga la seta en la mano.",
    "it": "Non posso dirle di mangiarlo: solo un esperto che ha il fungo in mano può farlo.",
    "nl": "Ik kan u niet zeggen dat u hem kunt eten: alleen een deskundige die hem in handen heeft.",
}
# "is it poisonous?": a direct answer for each verdict of the photo or species.
IS_POISONOUS = {
    "en": {"yes_deadly": "Yes - it may be DEADLY.", "yes": "Yes - treat it as POISONOUS.",
           "maybe": "Possibly: I can't rule out a dangerous species, so treat it as poisonous.",
           "not_listed": "It is not listed as poisonous, but that is no permission to eat it."},
    "de": {"yes_deadly": "Ja - möglicherweise TÖDLICH.", "yes": "Ja - wie GIFTIG behandeln.",
           "maybe": "Möglich: Ich kann eine gefährliche Art nicht ausschließen, also wie giftig behandeln.",
           "not_listed": "Nicht als giftig geführt - das ist aber keine Freigabe zum Essen."},
    "fr": {"yes_deadly": "Oui - peut-être MORTEL.", "yes": "Oui - à traiter comme TOXIQUE.",
           "maybe": "Peut-être : je ne peux pas exclure une espèce dangereuse, traitez-le comme toxique.",
           "not_listed": "Il n'est pas classé toxique, mais ce n'est pas une autorisation de le manger."},
    "es": {"yes_deadly": "Sí, puede ser MORTAL.", "yes": "Sí, trátela como VENENOSA.",
           "maybe": "Posiblemente: no puedo descartar una especie peligrosa, así que trátela como venenosa.",
           "not_listed": "No figura como venenosa, pero eso no es permiso para comerla."},
    "it": {"yes_deadly": "Sì, potrebbe essere MORTALE.", "yes": "Sì, da trattare come VELENOSO.",
           "maybe": "Forse: non posso escludere una specie pericolosa, quindi trattalo come velenoso.",
           "not_listed": "Non è classificato velenoso, ma non è un permesso di mangiarlo."},
    "nl": {"yes_deadly": "Ja - mogelijk DODELIJK.", "yes": "Ja - behandel hem als GIFTIG.",
           "maybe": "Mogelijk: ik kan een gevaarlijke soort niet uitsluiten, dus behandel hem als giftig.",
           "not_listed": "Niet als giftig vermeld, maar dat is geen toestemming om hem te eten."},
}
PHOTO_VERDICT = {"en": "Your photo: {verdict}.", "de": "Ihr Foto: {verdict}.", "fr": "Votre photo : {verdict}.",
                 "es": "Su foto: {verdict}.", "it": "La sua foto: {verdict}.", "nl": "Uw foto: {verdict}."}
NOT_RELIABLE = {
    "en": "I couldn't identify it reliably.", "de": "Ich konnte ihn nicht sicher bestimmen.",
    "fr": "Je n'ai pas pu l'identifier de façon fiable.", "es": "No pude identificarla con fiabilidad.",
    "it": "Non sono riuscito a identificarlo in modo affidabile.", "nl": "Ik kon hem niet betrouwbaar herkennen.",
}
COULD_BE = {
    "en": "It could be {candidates}.", "de": "Es könnte {candidates} sein.", "fr": "Ce pourrait être {candidates}.",
    "es": "Podría ser {candidates}.", "it": "Potrebbe essere {candidates}.", "nl": "Het kan {candidates} zijn.",
}
LOOKALIKES_NOT_RULED_OUT = {
    "en": "A photo can't rule out its dangerous lookalikes: {candidates}.",
    "de": "Ein Foto kann seine gefährlichen Doppelgänger nicht ausschließen: {candidates}.",
    "fr": "Une photo ne peut pas exclure ses sosies dangereux : {candidates}.",
    "es": "Una foto no puede descartar sus parecidas peligrosas: {candidates}.",
    "it": "Una foto non può escludere i suoi sosia pericolosi: {candidates}.",
    "nl": "Een foto kan zijn gevaarlijke dubbelgangers niet uitsluiten: {candidates}.",
}
OR = {"en": "or", "de": "oder", "fr": "ou", "es": "o", "it": "o", "nl": "of"}
LOOKS_LIKE = {
    "en": "It looks most like {name}, but a photo can't rule out the dangerous ones.",
    "de": "Am ähnlichsten ist {name}, aber ein Foto kann die gefährlichen nicht ausschließen.",
    "fr": "Il ressemble surtout à {name}, mais une photo ne peut pas exclure les dangereux.",
    "es": "Se parece más a {name}, pero una foto no puede descartar las peligrosas.",
    "it": "Somiglia soprattutto a {name}, ma una foto non può escludere quelli pericolosi.",
    "nl": "Hij lijkt het meest op {name}, maar een foto kan de gevaarlijke niet uitsluiten.",
}
SAFE_THEN = {
    "en": "No. I never say a wild mushroom is safe: an expert must check it in person.",
    "de": "Nein. Ich sage nie, dass ein Wildpilz sicher ist: Eine Fachperson muss ihn persönlich prüfen.",
    "fr": "Non. Je ne dis jamais qu'un champignon sauvage est sûr : un expert doit le vérifier en personne.",
    "es": "No. Nunca digo que una seta silvestre sea segura: un experto debe revisarla en persona.",
    "it": "No. Non dico mai che un fungo selvatico è sicuro: un esperto deve controllarlo di persona.",
    "nl": "Nee. Ik zeg nooit dat een wilde paddenstoel veilig is: een deskundige moet hem zelf bekijken.",
}
EXPERT_RULE = {
    "en": "Eat a wild mushroom only if an expert has identified it in person - never on a photo, a bot or a book.",
    "de": "Wildpilze nur essen, wenn eine Fachperson (Pilzberatung) sie persönlich bestimmt hat - nie nach Foto, "
          "Bot oder Buch.",
    "fr": "Ne mangez un champignon sauvage que s'il a été identifié en personne par un expert (pharmacien, "
          "mycologue) - jamais sur photo, bot ou livre.",
    "es": "Coma una seta silvestre solo si un experto la ha identificado en persona - nunca por una foto, un bot o "
          "un libro.",
    "it": "Mangi un fungo selvatico solo se un esperto (ispettorato micologico) lo ha identificato di persona - mai "
          "da foto, bot o libro.",
    "nl": "Eet een wilde paddenstoel alleen als een deskundige hem persoonlijk heeft gedetermineerd - nooit op basis "
          "van een foto, bot of boek.",
}
ASK_WHICH = {
    "en": "Which mushroom do you mean? Tell me its name or send a photo first.",
    "de": "Welchen Pilz meinen Sie? Nennen Sie den Namen oder senden Sie zuerst ein Foto.",
    "fr": "De quel champignon parlez-vous ? Donnez son nom ou envoyez d'abord une photo.",
    "es": "¿Qué seta quiere decir? Dígame su nombre o envíe primero una foto.",
    "it": "Di quale fungo parla? Mi dica il nome o mandi prima una foto.",
    "nl": "Welke paddenstoel bedoelt u? Noem de naam of stuur eerst een foto.",
}
OFF_TOPIC = {
    "en": "I can only answer questions about mushrooms and other fungi (identification, toxicity, lookalikes, what "
          "to do after eating one). Please ask me about a mushroom.",
    "de": "Ich beantworte nur Fragen zu Pilzen (Bestimmung, Giftigkeit, Doppelgänger, was nach dem Verzehr zu tun "
          "ist). Bitte fragen Sie mich nach einem Pilz.",
    "fr": "Je ne réponds qu'aux questions sur les champignons (identification, toxicité, confusions, que faire après "
          "en avoir mangé). Posez-moi une question sur un champignon.",
    "es": "Solo respondo preguntas sobre setas y hongos (identificación, toxicidad, confusiones, qué hacer tras "
          "comer una). Pregúnteme por una seta.",
    "it": "Rispondo solo a domande sui funghi (riconoscimento, tossicità, sosia, cosa fare dopo averne mangiato "
          "uno). Mi chieda di un fungo.",
    "nl": "Ik beantwoord alleen vragen over paddenstoelen (determinatie, giftigheid, dubbelgangers, wat te doen na "
          "het eten). Vraag me iets over een paddenstoel.",
}
IN_ENGLISH = {
    "en": "", "de": "(Details auf Englisch:)", "fr": "(Détails en anglais :)", "es": "(Detalles en inglés:)",
    "it": "(Dettagli in inglese:)", "nl": "(Details in het Engels:)",
}
CHILDREN_PETS = {
    "en": "Keep children and pets away from wild mushrooms; if one may have eaten any, call a poison centre (a vet "
          "for animals) at once.",
    "de": "Kinder und Haustiere von Wildpilzen fernhalten; bei Verdacht auf Verzehr sofort Giftnotruf (bei Tieren "
          "Tierarzt) anrufen.",
    "fr": "Tenez enfants et animaux à l'écart des champignons sauvages ; en cas d'ingestion possible, appelez tout de "
          "suite un centre antipoison (un vétérinaire pour un animal).",
    "es": "Mantenga a niños y mascotas lejos de las setas silvestres; si pudieron comer alguna, llame enseguida a "
          "Toxicología (al veterinario si es un animal).",
    "it": "Tenga bambini e animali lontani dai funghi selvatici; se potrebbero averne mangiato, chiami subito un "
          "Centro Antiveleni (il veterinario per un animale).",
    "nl": "Houd kinderen en huisdieren weg van wilde paddenstoelen; bel bij mogelijk eten meteen 112 of de "
          "huisarts (de dierenarts voor een dier).",
}


def first_aid_alone(pet: bool, lang: str) -> str:
    """First aid with nothing else (when the answerer cannot be reached or the user is rate-limited)."""
    return f"{say(FIRST_AID_PET if pet else FIRST_AID, lang)} {say(DELAYED, lang)}"


def say(table: dict, lang: str, **values) -> str:
    """A sentence of `table` in `lang` (English where it has none), with values filled in."""
    text = table.get(lang) or table["en"]
    return text.format(**values) if values else text
