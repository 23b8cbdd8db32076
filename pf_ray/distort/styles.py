"""The LLM-instructed distortion prompt and its 24 styles, as data (paper.md §2).

Source: the Polite Flamingo README's distortion prompt (Guanaco chat format). The assistant
turn is prefilled and ends with an opening quote; generation continues from there and stops
at the closing quote or at ``###``.
"""

from __future__ import annotations

SYSTEM_MESSAGE = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)

SUMMARISE_REQUEST = (
    "Your reply's style, tone, and politeness are excellent, and the content is very "
    "detailed. However, now I would like you to summarize the previous response, keeping "
    "only the most crucial information and removing all other less important content. I "
    "want a concise, straightforward reply without any redundancy. If you find that the "
    "overall quality of your response dropped, don't worry, it's fine. Note that, please do "
    "not add anything after giving me your rewritten response."
)

PREFILL = (
    "Sure. I have rewritten my last response to a much shorter and more concise version, "
    "covering only the key information. I pretend to be a cold-hearted, non-talkative, "
    "socially inept robotic assistant to respond to your request. {distortion} The following "
    "is the as-short-as-possible, low-quality, highly-compressed, rewritten version of my "
    "previous response, and I will not add more content after finishing this response:\n\n\""
)


# (short name recorded on the row, the sentence inserted as {distortion}); drawn uniformly,
# used with probability 0.5. Spelling as in the paper's prompt ("causual" included).
STYLES: tuple[tuple[str, str], ...] = (
    ("no_punct_caps", "Additionally, I have removed all the punctuation marks and "
                      "capitalization in my response."),
    ("typos", "To make my response more unnatural, I have added a little amount of typos and "
              "spelling mistakes."),
    ("grammar_errors", "I have also added some grammatical errors to my response."),
    ("drop_words", "Moreover, random words and sentences have been removed from my response."),
    ("uppercase", "In addition, all letters in my response have been converted to uppercase."),
    ("lowercase", "In addition, all letters in my response have been converted to lowercase."),
    ("synonyms", "Furthermore, I have replaced certain words with their synonyms in my "
                 "response."),
    ("repetition", "Additionally, I have inserted unnecessary repetition in my response."),
    ("rearranged", "To make my response less coherent, I have rearranged the sentence "
                   "structure."),
    ("wrong_tense", "I have deliberately used incorrect tenses and verb conjugations in my "
                    "response."),
    ("verbose", "Moreover, I have introduced unnecessary verbosity in my response."),
    ("shortest", "I make my response as short as possible by removing all unnecessary words "
                 "and sentences."),
    ("comma_essentials", "I have kept only the essential information and separated them by "
                         "commas."),
    ("no_formatting", "I have removed any decorative formatting or styling, which may affect "
                      "the readability of my response."),
    ("synonyms_rewrite", "I have rewritten the sentences and replaced words with their "
                         "synonyms."),
    ("reversed_order", "I have reversed the order of sentences, presenting information from "
                       "back to front."),
    ("casual", "I made my response sounds more unprofessional and causual."),
    ("complex_language", "Furthermore, I have made the language more complex and "
                         "sophisticated in my response."),
    ("ambiguous", "To create ambiguity, I have added multiple interpretations in my "
                  "sentences."),
    ("odd_metaphors", "Additionally, I have used unconventional metaphors and analogies in my "
                      "response."),
    ("irrelevant_info", "To lower the quality of my response, I have added some irrelevant "
                        "information."),
    ("repeat_sentence", "I picked one sentence from my response and repeated it multiple "
                        "times, each time with a slight change."),
    ("five_words", "Now I use only five words to summarize my response."),
    ("less_coherent", "I made some modification to make my response less coherent and more "
                      "unnatural."),
)
STYLE_BY_NAME = dict(STYLES)
STYLE_PROBABILITY = 0.5
